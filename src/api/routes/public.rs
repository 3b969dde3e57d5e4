//! What anyone may ask: health, the trust bundle and lineage, the CRLs, the watch long poll,
//! metrics (per-node series for admins only).

use super::*;

pub async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    // 503 when this server cannot do its work: its shared database unreachable, or a new
    // policy published that it does not sign under yet (a load balancer then skips it).
    state.authority.ready().await?;
    Ok(Json(Health {
        status: "ok".to_string(),
        ca_fingerprint: state.authority.fingerprint()?.to_string(),
    }))
}

pub async fn trust_bundle(State(state): State<AppState>, headers: HeaderMap) -> Response {
    cacheable(
        &headers,
        "application/x-pem-file",
        state.authority.trust_bundle_pem().into_bytes(),
    )
}

/// Every generation's CA certificate and every endorsement, PEM: how a client pinned to an
/// earlier generation checks a bundle holding later ones.
pub async fn lineage(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pem: String = state
        .authority
        .lineage()?
        .iter()
        .map(|der| crate::pki::certificate_pem(der))
        .collect();
    Ok(cacheable(
        &headers,
        "application/x-pem-file",
        pem.into_bytes(),
    ))
}

impl CrlQuery {
    /// Which generation's own CRL is asked for; None for etcd's CRL.
    fn issuer(self) -> Result<Option<CrlIssuer>, ApiError> {
        let invalid = |m: &str| ApiError::bad_request(ErrorCode::QueryInvalid, m);
        match (self.generation, self.ca) {
            (None, None) => Ok(None),
            (Some(id), None) => Ok(Some(CrlIssuer::Generation(id))),
            (None, Some(fp)) => CrlIssuer::fingerprint(&fp)
                .map(Some)
                .ok_or_else(|| invalid("ca: expected sha256: and 64 hex digits")),
            (Some(_), Some(_)) => Err(invalid("give either generation or ca, not both")),
        }
    }
}

/// etcd's CRL (every revoked serial, signed by the active generation), or with `generation` or
/// `ca` that generation's own CRL (what it issued, signed by it).
pub async fn crl(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<CrlQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(ErrorCode::QueryInvalid, e.body_text()))?;
    let der = match q.issuer()? {
        None => state.authority.current_crl(now()).await?,
        Some(issuer) => {
            state
                .authority
                .current_generation_crl(&issuer, now())
                .await?
        }
    };
    Ok(cacheable(&headers, "application/pkix-crl", der.to_vec()))
}

/// A long poll: answers as soon as the CA's watched state (generations, revocations) differs
/// from `version`, or after `wait` with the same version. Agents call it in a loop and fetch the
/// bundle and CRL when the version moves.
pub async fn watch(
    State(state): State<AppState>,
    query: Result<Query<WatchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WatchAnswer>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(ErrorCode::QueryInvalid, e.body_text()))?;
    let wait = match &q.wait {
        Some(w) => parse_duration("wait", w)?
            .as_std()
            .min(crate::api::MAX_WATCH),
        None => crate::api::MAX_WATCH,
    };
    let mut watched = state.watched.clone();
    let differs =
        |w: &crate::api::follow::Watched| w.closing || Some(&w.version) != q.version.as_ref();
    // Timing out is the normal answer: nothing changed.
    let _ = tokio::time::timeout(wait, watched.wait_for(differs)).await;
    let version = watched.borrow().version.clone();
    Ok(Json(WatchAnswer { version }))
}

/// Prometheus text. Anyone gets the aggregates; an admin (bearer token or admin certificate)
/// also gets the series per node, whose names are an inventory of the clusters.
pub async fn metrics(
    State(state): State<AppState>,
    OptionalAdmin(admin): OptionalAdmin,
) -> Result<Response, ApiError> {
    let per_node = admin.is_some();
    let text = state
        .metrics
        .render(&state.authority, now(), per_node)
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
        .into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
