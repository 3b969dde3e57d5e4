//! The web view (`/ui/`), served by `etcd-ca serve` on its own port and TLS: the fleet, the CA,
//! a rotation as it happens, and the audit trail with a lookup by serial or node. Read-only,
//! server-rendered HTML with everything embedded in the binary (no script, no external asset),
//! behind the same admin authentication as the admin API: an admin client certificate, or an
//! admin token given once on the login page and kept in an HttpOnly, Secure, SameSite=Strict
//! cookie. Without credentials every page answers with a redirect to the login page.

mod fleet_page;
mod html;
mod pages;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;

use super::error::ApiError;
use super::extract::{Admin, ClientCertificate};
use super::AppState;
use crate::authority::AdminActor;

/// The cookie holding the admin token of a web session.
const COOKIE: &str = "etcd_ca_admin";

/// The most a login form may weigh.
const MAX_LOGIN_BYTES: usize = 8 * 1024;

const STYLE: &str = include_str!("style.css");

/// The web view's routes, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { see_other("/ui/fleet") }))
        .route("/ui/", get(|| async { see_other("/ui/fleet") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/style.css", get(style))
        .route("/ui/fleet", get(fleet_page::fleet))
        .route("/ui/ca", get(pages::ca))
        .route("/ui/rotation", get(pages::rotation))
        .route("/ui/audit", get(pages::audit))
}

/// An admin of the web view: by the session cookie's token or an admin client certificate.
/// Anyone else is sent to the login page.
pub struct UiAdmin(#[allow(dead_code)] pub AdminActor);

impl FromRequestParts<AppState> for UiAdmin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie(parts, COOKIE);
        let certificate = matches!(
            parts.extensions.get::<ClientCertificate>(),
            Some(ClientCertificate(Some(_)))
        );
        match token.as_deref().map(bearer) {
            Some(Some(value)) => {
                parts.headers.insert(header::AUTHORIZATION, value);
            }
            Some(None) => {
                let malformed =
                    crate::authority::AuthorityError::AdminTokenInvalid { why: "malformed" };
                return Err(to_login(Some(&malformed.into())));
            }
            None if !certificate => return Err(to_login(None)),
            None => {}
        }
        match Admin::from_request_parts(parts, state).await {
            Ok(Admin(actor)) => Ok(UiAdmin(actor)),
            Err(e) => Err(to_login(Some(&e))),
        }
    }
}

/// `Authorization: Bearer TOKEN`, if the token can go in a header at all.
fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

/// A cookie's value from the request.
fn cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_string())],
    )
        .into_response()
}

/// To the login page, forgetting any session. With a reason (a credential that was refused),
/// the login page is answered here with it, not through a redirect: the page never shows text
/// taken from a URL someone else could have crafted.
fn to_login(why: Option<&ApiError>) -> Response {
    let mut response = match why {
        Some(why) => refused_login(why),
        None => see_other("/ui/login"),
    };
    response
        .headers_mut()
        .insert(header::SET_COOKIE, HeaderValue::from_static(CLEAR_COOKIE));
    response
}

const CLEAR_COOKIE: &str = "etcd_ca_admin=; Path=/ui; Max-Age=0; HttpOnly; Secure; SameSite=Strict";

async fn login_page() -> Response {
    page_response(StatusCode::OK, html::login(None))
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

/// Checks the admin token through the admin authentication (attempt limits and audit
/// included) and starts a session with it.
async fn login(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_LOGIN_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return unusable_form("the form is too large"),
    };
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return unusable_form("give an admin token");
    };
    let token = form.token.trim();
    let Some(value) = bearer(token).filter(|_| !token.is_empty()) else {
        return unusable_form("give an admin token");
    };
    parts.headers.insert(header::AUTHORIZATION, value);
    match Admin::from_request_parts(&mut parts, &state).await {
        Ok(_) => {
            let mut response = see_other("/ui/fleet");
            let cookie = format!("{COOKIE}={token}; Path=/ui; HttpOnly; Secure; SameSite=Strict");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => refused_login(&e),
    }
}

/// The login page with why the credential was refused, under the API's status for it (401,
/// or 429 once the address or token is locked out).
fn refused_login(why: &ApiError) -> Response {
    let (status, _) = why.status_and_code();
    page_response(status, html::login(Some(&why.to_string())))
}

/// The login page for a form that holds no usable token.
fn unusable_form(why: &str) -> Response {
    page_response(StatusCode::BAD_REQUEST, html::login(Some(why)))
}

async fn logout() -> Response {
    to_login(None)
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// An HTML page with the headers every page carries: nothing cached, nothing framed, nothing
/// loaded from elsewhere, no script at all.
fn page_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response()
}
