//! Request extractors: JSON bodies whose rejections become our JSON errors, the client
//! certificate of the TLS connection, and admin authentication.

use crate::wire::ErrorCode;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;

use super::error::{authority_status, ApiError};
use super::AppState;
use crate::authority::{AdminActor, AuthorityError};

/// The certificate the client presented in the TLS handshake, if any. The TLS layer only
/// checks that the client holds its key; the authority decides whether to trust it.
#[derive(Clone, Debug, Default)]
pub struct ClientCertificate(pub Option<Arc<Vec<u8>>>);

impl<S: Send + Sync> FromRequestParts<S> for ClientCertificate {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientCertificate>()
            .cloned()
            .unwrap_or_default())
    }
}

/// The address the connection came from (unspecified when served without the accept loop).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .unwrap_or(ClientAddr(std::net::IpAddr::from([0, 0, 0, 0]))))
    }
}

/// A JSON body; malformed bodies, wrong content types and oversized bodies become `ApiError`s.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Exactly application/json (parameters such as charset aside): axum would also take
        // any application/*+json.
        let json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(ApiError::Request {
                status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
                code: ErrorCode::ContentTypeUnsupported,
                message: "send the body as Content-Type: application/json".into(),
            });
        }
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    let status = rejection.status();
    let (status, code) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (status, ErrorCode::BodyTooLarge),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (status, ErrorCode::ContentTypeUnsupported),
        _ => (StatusCode::BAD_REQUEST, ErrorCode::BodyInvalid),
    };
    ApiError::Request {
        status,
        code,
        message: rejection.body_text(),
    }
}

/// An authenticated admin: a bearer admin token, or a client certificate of the admin profile.
pub struct Admin(pub AdminActor);

/// An admin if the request carries credentials (which must then be an admin's), None when it
/// carries none: for endpoints that show more to an admin.
pub struct OptionalAdmin(pub Option<AdminActor>);

impl FromRequestParts<AppState> for OptionalAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts.headers.contains_key(header::AUTHORIZATION);
        let certificate = matches!(
            parts.extensions.get::<ClientCertificate>(),
            Some(ClientCertificate(Some(_)))
        );
        if !bearer && !certificate {
            return Ok(OptionalAdmin(None));
        }
        if let (false, Some(ClientCertificate(Some(der)))) =
            (bearer, parts.extensions.get::<ClientCertificate>())
        {
            // A valid certificate of another profile (a node's, or an etcd client's that a
            // scraper reuses) is no admin credential rather than a wrong one: the public view.
            // Anything else it could be (revoked, unknown) is refused below, counted and
            // audited.
            match state
                .authority
                .authenticate_admin_certificate(der, crate::clock::now())
                .await
            {
                Ok(actor) => return Ok(OptionalAdmin(Some(actor))),
                Err(AuthorityError::AdminRequired) => return Ok(OptionalAdmin(None)),
                Err(_) => {}
            }
        }
        let Admin(actor) = Admin::from_request_parts(parts, state).await?;
        Ok(OptionalAdmin(Some(actor)))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let authority = &state.authority;
        let ClientAddr(source) = ClientAddr::from_request_parts(parts, state).await?;
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let result = match bearer {
            Some(token) => authority.authenticate_admin_token(token).await,
            None => match parts.extensions.get::<ClientCertificate>() {
                Some(ClientCertificate(Some(der))) => {
                    authority
                        .authenticate_admin_certificate(der, crate::clock::now())
                        .await
                }
                _ => Err(AuthorityError::AdminRequired),
            },
        };
        let anonymous = bearer.is_none()
            && !matches!(
                parts.extensions.get::<ClientCertificate>(),
                Some(ClientCertificate(Some(_)))
            );
        match result {
            // A valid credential is never refused for what others did from this address.
            Ok(actor) => Ok(Admin(actor)),
            Err(e) => {
                let code = authority_status(&e).1;
                if anonymous {
                    // No credential at all: nothing to count against the address.
                    state.metrics.refused("admin", code);
                    state.anonymous.note("admin", code);
                    return Err(e.into());
                }
                if let Some(locked) = state
                    .limiter
                    .failed(source, None, std::time::Instant::now())
                    .await
                {
                    // Counted under what the client was told: locked out.
                    state.metrics.refused("admin", locked.status_and_code().1);
                    return Err(locked);
                }
                state.metrics.refused("admin", code);
                authority
                    .audit_refusal("admin", "unauthenticated", &e, crate::clock::now())
                    .await;
                Err(e.into())
            }
        }
    }
}
