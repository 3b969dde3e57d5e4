//! What nodes ask: enrollment with a bootstrap token, renewal and reports over mTLS.

use super::*;

pub async fn enroll(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    ApiJson(body): ApiJson<EnrollBody>,
) -> Result<Json<Enrollment>, ApiError> {
    let token_id = crate::authority::token_id(&body.token);
    let started = std::time::Instant::now();
    state.limiter.check_token(token_id, started).await?;
    match state
        .authority
        .enroll(&body.token, body.node.as_deref(), &body.csrs, now())
        .await
    {
        Ok(enrollment) => {
            if !enrollment.replayed {
                for c in enrollment.certificates.values() {
                    state.metrics.issued(&c.profile);
                }
            }
            Ok(Json(Enrollment::from(enrollment)))
        }
        Err(e) => {
            if matches!(
                e,
                AuthorityError::TokenInvalid
                    | AuthorityError::TokenExpired { .. }
                    | AuthorityError::TokenUsed
            ) {
                if let Some(locked) = state.limiter.failed(source, token_id, started).await {
                    state.metrics.refused("enroll", authority_status(&e).1);
                    return Err(locked);
                }
            }
            // The audit trail names the token (its public id) the refusal was for.
            let actor = token_id.map_or_else(|| "token".to_string(), |id| format!("token:{id}"));
            Err(refused(&state, "enroll", &actor, e).await)
        }
    }
}

/// The client certificate of this connection, or a counted and audited refusal.
pub(super) async fn required_certificate(
    state: &AppState,
    presented: Option<std::sync::Arc<Vec<u8>>>,
    action: &str,
) -> Result<std::sync::Arc<Vec<u8>>, ApiError> {
    match presented {
        Some(der) => Ok(der),
        None => Err(refused(
            state,
            action,
            "anonymous",
            AuthorityError::ClientCertificateRequired,
        )
        .await),
    }
}

pub async fn renew(
    State(state): State<AppState>,
    ClientCertificate(presented): ClientCertificate,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<crate::wire::Certificate>, ApiError> {
    let presented = required_certificate(&state, presented, "renew").await?;
    let body: Option<RenewBody> = optional_json(&headers, &body)?;
    let csr = body.and_then(|b| b.csr);
    match state
        .authority
        .renew(&presented, csr.as_deref(), now())
        .await
    {
        Ok(issued) => {
            state.metrics.renewed(&issued.profile);
            Ok(Json(issued.into()))
        }
        Err(e) => Err(refused(&state, "renew", "client-certificate", e).await),
    }
}

/// Renews the presented certificate and the node's other listed certificates (mTLS).
pub async fn renew_node(
    State(state): State<AppState>,
    ClientCertificate(presented): ClientCertificate,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RenewedNode>, ApiError> {
    let presented = required_certificate(&state, presented, "renew").await?;
    let body: RenewNodeBody = optional_json(&headers, &body)?.unwrap_or(RenewNodeBody {
        serials: Vec::new(),
    });
    match state
        .authority
        .renew_node(&presented, &body.serials, now())
        .await
    {
        Ok(certificates) => {
            for c in &certificates {
                state.metrics.renewed(&c.profile);
            }
            Ok(Json(RenewedNode {
                certificates: certificates.into_iter().map(Into::into).collect(),
            }))
        }
        Err(e) => Err(refused(&state, "renew", "client-certificate", e).await),
    }
}
