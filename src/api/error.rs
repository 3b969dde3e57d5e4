//! The one place where errors become HTTP statuses.
//!
//! Every refusal is JSON `{"code": "...", "message": "..."}`: `code` is stable and
//! machine-readable, `message` is for people. 4xx answers carry the reason; 5xx answers are
//! logged here and answered generically.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::authority::AuthorityError;
use crate::pki::PkiError;
use crate::policy::PolicyError;
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
        code: &'static str,
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
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Request {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Request { status, code, .. } => (*status, code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Authority(e) => authority_status(e),
        }
    }
}

/// Status and stable code of an authority error.
pub fn authority_status(e: &AuthorityError) -> (StatusCode, &'static str) {
    use AuthorityError as E;
    match e {
        E::Policy(PolicyError::File { .. }) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        E::Policy(p) => (StatusCode::FORBIDDEN, policy_code(p)),
        E::TokenInvalid => (StatusCode::UNAUTHORIZED, "token_invalid"),
        E::TokenExpired { .. } => (StatusCode::UNAUTHORIZED, "token_expired"),
        E::TokenUsed => (StatusCode::CONFLICT, "token_used"),
        E::TokenProfileNotAllowed { .. } => (StatusCode::FORBIDDEN, "profile_not_allowed"),
        E::NodeMismatch { .. } => (StatusCode::FORBIDDEN, "node_mismatch"),
        E::NodeReserved { .. } => (StatusCode::FORBIDDEN, "node_reserved"),
        E::AdminTokenUnknown { .. } => (StatusCode::NOT_FOUND, "admin_token_unknown"),
        E::MemberCertificateRequired { .. } => {
            (StatusCode::FORBIDDEN, "member_certificate_required")
        }
        E::TokenTtlTooLong { .. } => (StatusCode::BAD_REQUEST, "ttl_too_long"),
        E::NodeNamesRequired { .. } => (StatusCode::BAD_REQUEST, "names_required"),
        E::TokenWithoutProfiles => (StatusCode::BAD_REQUEST, "profiles_required"),
        E::NoCsrs => (StatusCode::BAD_REQUEST, "csr_missing"),
        E::Csr { source, .. } => (StatusCode::BAD_REQUEST, csr_code(source)),
        E::ClientCertificateRequired => (StatusCode::UNAUTHORIZED, "client_certificate_required"),
        E::ClientCertificateUntrusted => (StatusCode::UNAUTHORIZED, "client_certificate_untrusted"),
        E::ClientCertificateExpired { .. } => {
            (StatusCode::UNAUTHORIZED, "client_certificate_expired")
        }
        E::ClientCertificateRevoked { .. } => (StatusCode::FORBIDDEN, "client_certificate_revoked"),
        E::ClientCertificateUnknown { .. } => (StatusCode::FORBIDDEN, "client_certificate_unknown"),
        E::AdminRequired => (StatusCode::UNAUTHORIZED, "admin_required"),
        E::AdminTokenInvalid { .. } => (StatusCode::UNAUTHORIZED, "admin_token_invalid"),
        E::RotationPhase { .. } => (StatusCode::CONFLICT, "rotation_phase"),
        E::NotConverged { .. } => (StatusCode::CONFLICT, "not_converged"),
        E::LeaseHeld { .. } => (StatusCode::CONFLICT, "lease_held"),
        E::UnknownSerial { .. } => (StatusCode::NOT_FOUND, "serial_unknown"),
        E::UnknownGeneration { .. } => (StatusCode::NOT_FOUND, "generation_unknown"),
        E::InvalidSerial { .. } => (StatusCode::BAD_REQUEST, "serial_invalid"),
        E::TooManySerials { .. } => (StatusCode::BAD_REQUEST, "too_many_serials"),
        E::AlreadyRevoked { .. } => (StatusCode::CONFLICT, "already_revoked"),
        E::UnknownReason { .. } => (StatusCode::BAD_REQUEST, "reason_unknown"),
        // A key type asked for that this build cannot generate: the caller's to change.
        E::Pki(PkiError::CannotGenerate { .. }) => {
            (StatusCode::BAD_REQUEST, "key_type_unsupported")
        }
        // Our own keys, CRLs and key generation: internal faults, whatever the request was.
        E::Pki(
            PkiError::Generate(_)
            | PkiError::Crl(_)
            | PkiError::KeyFormat { .. }
            | PkiError::EncryptedKey
            | PkiError::KeyRejected { .. },
        ) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        E::Pki(source) => (StatusCode::BAD_REQUEST, csr_code(source)),
        E::AlreadyInitialised { .. }
        | E::DirNotEmpty { .. }
        | E::NotInitialised { .. }
        | E::Import { .. }
        | E::Restore { .. }
        | E::KeyFilePermissions { .. }
        | E::NoActiveGeneration
        | E::NoNextGeneration
        | E::Corrupt { .. }
        | E::KeyMismatch { .. }
        | E::Sign(_)
        | E::Random
        | E::Passphrase(_)
        | E::Store(_)
        | E::Fs(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

/// The stable code of a policy refusal (policy itself knows nothing of the API).
fn policy_code(e: &PolicyError) -> &'static str {
    match e {
        PolicyError::File { .. } => "policy_file_invalid",
        PolicyError::UnknownProfile { .. } => "unknown_profile",
        PolicyError::IpNotAllowed { .. } | PolicyError::DnsNameNotAllowed { .. } => {
            "san_not_allowed"
        }
        PolicyError::SanOutsideIdentity { .. } => "san_outside_identity",
        PolicyError::CommonNameRequired { .. } => "common_name_required",
        PolicyError::CommonNameFixed { .. } => "common_name_fixed",
        PolicyError::PrivilegedCommonName { .. } => "common_name_privileged",
        PolicyError::ReservedCommonName { .. } => "common_name_reserved",
        PolicyError::InvalidCommonName { .. } => "common_name_invalid",
        PolicyError::KeyTypeNotAllowed { .. } => "key_type_not_allowed",
        PolicyError::IssuerExpired { .. } => "issuer_expired",
    }
}

fn csr_code(e: &PkiError) -> &'static str {
    match e {
        PkiError::CsrSignature => "csr_signature_invalid",
        PkiError::WeakSignature { .. } => "csr_signature_weak",
        PkiError::UnsupportedKeyAlgorithm { .. } | PkiError::RsaTooSmall { .. } => {
            "key_type_not_allowed"
        }
        PkiError::UnsupportedSan { .. } => "san_not_allowed",
        _ => "csr_malformed",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = if status.is_server_error() {
            tracing::error!(error = %crate::error_chain(&self), "request failed");
            "internal error; see the server log".to_string()
        } else {
            self.to_string()
        };
        let body = ErrorBody {
            code: code.to_string(),
            message,
        };
        (status, Json(body)).into_response()
    }
}
