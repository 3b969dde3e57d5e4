//! The one place where errors become HTTP statuses.
//!
//! Every refusal is JSON `{"code": "...", "message": "..."}`: `code` is stable and
//! machine-readable, `message` is for people. 4xx answers carry the reason; 5xx answers are
//! logged here and answered generically.

use crate::wire::ErrorCode;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::authority::{AuthorityError, Fault};
use crate::pki::PkiError;
use crate::policy::PolicyError;
use crate::store::StoreError;
use crate::wire::ErrorBody;

/// An error an API handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Authority(#[from] AuthorityError),
    /// A request that could not be read: body, content type, query, path.
    #[error("{message}")]
    Request {
        status: StatusCode,
        code: ErrorCode,
        message: String,
    },
    #[error("no such endpoint")]
    NotFound,
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        ApiError::Authority(AuthorityError::Policy(e))
    }
}

impl ApiError {
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Request {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::Request { status, code, .. } => (*status, *code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::Authority(e) => authority_status(e),
        }
    }
}

/// Status and stable code of an authority error.
pub fn authority_status(e: &AuthorityError) -> (StatusCode, ErrorCode) {
    use AuthorityError as E;
    match e {
        E::Policy(PolicyError::File { .. }) => {
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal)
        }
        E::Policy(p) => (StatusCode::FORBIDDEN, policy_code(p)),
        E::TokenInvalid => (StatusCode::UNAUTHORIZED, ErrorCode::TokenInvalid),
        E::TokenExpired { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired),
        E::TokenUsed => (StatusCode::CONFLICT, ErrorCode::TokenUsed),
        E::TokenProfileNotAllowed { .. } => (StatusCode::FORBIDDEN, ErrorCode::ProfileNotAllowed),
        E::NodeMismatch { .. } => (StatusCode::FORBIDDEN, ErrorCode::NodeMismatch),
        E::NodeReserved { .. } => (StatusCode::FORBIDDEN, ErrorCode::NodeReserved),
        E::AdminTokenUnknown { .. } => (StatusCode::NOT_FOUND, ErrorCode::AdminTokenUnknown),
        E::MemberCertificateRequired { .. } => {
            (StatusCode::FORBIDDEN, ErrorCode::MemberCertificateRequired)
        }
        E::TokenTtlTooLong { .. } => (StatusCode::BAD_REQUEST, ErrorCode::TtlTooLong),
        E::NodeNamesRequired { .. } => (StatusCode::BAD_REQUEST, ErrorCode::NamesRequired),
        E::TokenWithoutProfiles => (StatusCode::BAD_REQUEST, ErrorCode::ProfilesRequired),
        E::NoCsrs => (StatusCode::BAD_REQUEST, ErrorCode::CsrMissing),
        E::Csr { source, .. } => (StatusCode::BAD_REQUEST, csr_code(source)),
        E::ClientCertificateRequired => (
            StatusCode::UNAUTHORIZED,
            ErrorCode::ClientCertificateRequired,
        ),
        E::ClientCertificateUntrusted => (
            StatusCode::UNAUTHORIZED,
            ErrorCode::ClientCertificateUntrusted,
        ),
        E::ClientCertificateExpired { .. } => (
            StatusCode::UNAUTHORIZED,
            ErrorCode::ClientCertificateExpired,
        ),
        E::ClientCertificateRevoked { .. } => {
            (StatusCode::FORBIDDEN, ErrorCode::ClientCertificateRevoked)
        }
        E::ClientCertificateUnknown { .. } => {
            (StatusCode::FORBIDDEN, ErrorCode::ClientCertificateUnknown)
        }
        E::AdminRequired => (StatusCode::UNAUTHORIZED, ErrorCode::AdminRequired),
        E::AdminTokenInvalid { .. } => (StatusCode::UNAUTHORIZED, ErrorCode::AdminTokenInvalid),
        E::RotationPhase { .. } => (StatusCode::CONFLICT, ErrorCode::RotationPhase),
        E::NotConverged { .. } => (StatusCode::CONFLICT, ErrorCode::NotConverged),
        E::LeaseHeld { .. } => (StatusCode::CONFLICT, ErrorCode::LeaseHeld),
        E::UnknownSerial { .. } => (StatusCode::NOT_FOUND, ErrorCode::SerialUnknown),
        E::UnknownGeneration { .. } => (StatusCode::NOT_FOUND, ErrorCode::GenerationUnknown),
        E::InvalidSerial { .. } => (StatusCode::BAD_REQUEST, ErrorCode::SerialInvalid),
        E::TooManySerials { .. } => (StatusCode::BAD_REQUEST, ErrorCode::TooManySerials),
        E::AlreadyRevoked { .. } => (StatusCode::CONFLICT, ErrorCode::AlreadyRevoked),
        E::UnknownReason { .. } => (StatusCode::BAD_REQUEST, ErrorCode::ReasonUnknown),
        // A key type asked for that this build cannot generate: the caller's to change.
        E::Pki(PkiError::CannotGenerate { .. }) => {
            (StatusCode::BAD_REQUEST, ErrorCode::KeyTypeUnsupported)
        }
        // Our own keys, CRLs and key generation: internal faults, whatever the request was.
        E::Pki(
            PkiError::Generate(_)
            | PkiError::Crl(_)
            | PkiError::KeyFormat { .. }
            | PkiError::EncryptedKey
            | PkiError::KeyRejected { .. },
        ) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        E::Pki(source) => (StatusCode::BAD_REQUEST, csr_code(source)),
        // The database cannot take writes (a standby) or cannot be reached: try again, or
        // another server.
        E::Fault(Fault::Store(StoreError::ReadOnly)) => {
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::DatabaseReadOnly)
        }
        E::Fault(Fault::Store(StoreError::Unavailable(_) | StoreError::Closed)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DatabaseUnavailable,
        ),
        E::PolicyChanged => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::PolicyChanged),
        // Every other internal fault is a 500, whatever the request was.
        E::Fault(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        // The operator's own refusals on the data dir; no API operation returns them.
        E::AlreadyInitialised { .. }
        | E::DirNotEmpty { .. }
        | E::NotInitialised { .. }
        | E::DatabaseNotInitialised { .. }
        | E::UnsealedKeyInDatabase
        | E::Moved { .. }
        | E::DatabaseInitialised { .. }
        | E::PolicyMismatch { .. }
        | E::Import { .. }
        | E::Restore { .. } => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
    }
}

/// The stable code of a policy refusal (policy itself knows nothing of the API).
fn policy_code(e: &PolicyError) -> ErrorCode {
    match e {
        PolicyError::File { .. } => ErrorCode::PolicyFileInvalid,
        PolicyError::UnknownProfile { .. } => ErrorCode::UnknownProfile,
        PolicyError::IpNotAllowed { .. } | PolicyError::DnsNameNotAllowed { .. } => {
            ErrorCode::SanNotAllowed
        }
        PolicyError::SanOutsideIdentity { .. } => ErrorCode::SanOutsideIdentity,
        PolicyError::CommonNameRequired { .. } => ErrorCode::CommonNameRequired,
        PolicyError::CommonNameFixed { .. } => ErrorCode::CommonNameFixed,
        PolicyError::PrivilegedCommonName { .. } => ErrorCode::CommonNamePrivileged,
        PolicyError::ReservedCommonName { .. } => ErrorCode::CommonNameReserved,
        PolicyError::InvalidCommonName { .. } => ErrorCode::CommonNameInvalid,
        PolicyError::KeyTypeNotAllowed { .. } => ErrorCode::KeyTypeNotAllowed,
        PolicyError::IssuerExpired { .. } => ErrorCode::IssuerExpired,
    }
}

fn csr_code(e: &PkiError) -> ErrorCode {
    match e {
        PkiError::CsrSignature => ErrorCode::CsrSignatureInvalid,
        PkiError::WeakSignature { .. } => ErrorCode::CsrSignatureWeak,
        PkiError::UnsupportedKeyAlgorithm { .. } | PkiError::RsaTooSmall { .. } => {
            ErrorCode::KeyTypeNotAllowed
        }
        PkiError::UnsupportedSan { .. } => ErrorCode::SanNotAllowed,
        _ => ErrorCode::CsrMalformed,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match code {
            // A server that cannot serve now, and why: the client tries another, or later.
            ErrorCode::DatabaseUnavailable => {
                tracing::warn!(error = %crate::error_chain(&self), "request failed");
                "this server cannot reach its database now; try another server or again later"
                    .to_string()
            }
            ErrorCode::DatabaseReadOnly | ErrorCode::PolicyChanged => {
                tracing::warn!(error = %crate::error_chain(&self), "request refused");
                match &self {
                    ApiError::Authority(AuthorityError::PolicyChanged) => self.to_string(),
                    _ => "this server's database is a read-only standby: it serves the trust bundle and CRLs; writes go to a server on the primary".to_string(),
                }
            }
            _ if status.is_server_error() => {
                tracing::error!(error = %crate::error_chain(&self), "request failed");
                "internal error; see the server log".to_string()
            }
            _ => self.to_string(),
        };
        let body = ErrorBody {
            code: code.as_str().to_string(),
            message,
        };
        (status, Json(body)).into_response()
    }
}
