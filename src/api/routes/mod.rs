//! Thin handlers: read the request, call the authority, shape the answer (wire types).
//!
//! `public` answers anyone (health, trust bundle, lineage, CRL, watch, metrics), `node` the
//! nodes (enrollment with a token, renewal and reports over mTLS), `admin` an admin (tokens,
//! certificates, issue, audit, backup, rotation). This file holds what they share.

use crate::wire::ErrorCode;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::error::{authority_status, ApiError};
use super::extract::{Admin, ApiJson, ClientAddr, ClientCertificate, OptionalAdmin};
use super::ops::{self, parse_duration};
use super::AppState;
use crate::authority::{AuthorityError, CrlIssuer};
use crate::wire::{
    AdminTokenRevoked, AuditEntry, AuditQuery, CertificateInfo, CertificatePage, CertsQuery,
    CrlQuery, EnrollBody, Enrollment, Health, IssueBody, IssueResponse, Lease, RenewBody,
    RenewNodeBody, RenewedNode, ReportBody, RevokeBody, RotateBody, SignBody, TokenBody,
    TokenResponse, WatchAnswer, WatchQuery, BACKUP_CERTIFICATES, BACKUP_GENERATIONS,
};

fn now() -> OffsetDateTime {
    crate::clock::now()
}

/// Answers a body with an ETag, or 304 when the client already has it.
fn cacheable(headers: &HeaderMap, content_type: &'static str, body: Vec<u8>) -> Response {
    let etag = format!("\"{}\"", crate::pki::sha256_hex(&body));
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

/// A JSON body that may be absent (an empty body means "no options").
fn optional_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if !json {
        return Err(ApiError::Request {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: ErrorCode::ContentTypeUnsupported,
            message: "send the body as Content-Type: application/json".into(),
        });
    }
    serde_json::from_slice(body).map(Some).map_err(|e| {
        ApiError::bad_request(ErrorCode::BodyInvalid, format!("invalid JSON body: {e}"))
    })
}

/// Counts and audits a refused node request, then hands the error on. A request without any
/// credential (`actor` "anonymous") is only counted: anyone can send many.
async fn refused(state: &AppState, action: &str, actor: &str, e: AuthorityError) -> ApiError {
    let (_, code) = authority_status(&e);
    state.metrics.refused(action, code);
    if actor == "anonymous" {
        state.anonymous.note(action, code);
        return ApiError::Authority(e);
    }
    state
        .authority
        .audit_refusal(action, actor, &e, now())
        .await;
    tracing::info!(action, actor, code = code.as_str(), reason = %e, "refused");
    ApiError::Authority(e)
}

/// An admin's request refused by the authority: counted and audited like a node's (the
/// admin is known, so each is a row); faults of the server itself are only logged.
async fn audited<T, E: Into<ApiError>>(
    state: &AppState,
    action: &str,
    admin: &str,
    result: Result<T, E>,
) -> Result<T, ApiError> {
    match result.map_err(Into::into) {
        Ok(value) => Ok(value),
        Err(ApiError::Authority(e)) if authority_status(&e).0.is_client_error() => {
            Err(refused(state, action, admin, e).await)
        }
        Err(e) => Err(e),
    }
}

mod admin;
mod node;
mod public;

pub use admin::*;
pub use node::*;
pub use public::*;
