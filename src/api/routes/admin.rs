//! What admins ask: tokens, certificates, issuance, the audit trail, backups and rotation.

use super::*;

/// Signs a CSR on an admin's word (`cfssl sign`): for consumers that make their own keys.
pub async fn sign(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Json<crate::wire::Certificate>, ApiError> {
    let ips = body.ips.unwrap_or_default();
    let dns = body.dns_names.unwrap_or_default();
    let (node, ips, dns) = ops::parse_names(&body.node, &ips, &dns)?;
    let names = (!ips.is_empty() || !dns.is_empty()).then_some((ips, dns));
    let signed = state
        .authority
        .sign_csr(
            &body.profile,
            &node,
            names,
            &body.csr,
            body.common_name.as_deref(),
            &admin.0,
            now(),
        )
        .await;
    let issued = audited(&state, "sign", &admin.0, signed).await?;
    state.metrics.issued(&issued.profile);
    Ok(Json(issued.into()))
}

pub async fn create_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<TokenResponse>, ApiError> {
    let created = ops::create_token(&state.authority, body, &admin.0, now()).await;
    Ok(Json(
        audited(&state, "token.create", &admin.0, created).await?,
    ))
}

pub async fn list_certs(
    State(state): State<AppState>,
    Admin(_): Admin,
    query: Result<Query<CertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CertificatePage>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(ErrorCode::QueryInvalid, e.body_text()))?;
    Ok(Json(ops::certificates(&state.authority, q, now()).await?))
}

pub async fn show_cert(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(serial): Path<String>,
) -> Result<Json<CertificateInfo>, ApiError> {
    Ok(Json(
        ops::certificate(&state.authority, &serial, now()).await?,
    ))
}

pub async fn revoke_cert(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CertificateInfo>, ApiError> {
    let body: RevokeBody = optional_json(&headers, &body)?.unwrap_or_default();
    let revoked = ops::revoke(&state.authority, &serial, body, &admin.0, now()).await;
    Ok(Json(audited(&state, "revoke", &admin.0, revoked).await?))
}

/// Server-side key generation, for consumers that cannot run the agent (kube-apiserver's etcd
/// client certificate). The key travels once, over this TLS connection, to an admin.
pub async fn issue(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Json<IssueResponse>, ApiError> {
    let issued = ops::issue(&state.authority, body, &admin.0, now()).await;
    let issued = audited(&state, "issue", &admin.0, issued).await?;
    state.metrics.issued(&issued.certificate.profile);
    Ok(Json(issued))
}

pub async fn audit(
    State(state): State<AppState>,
    Admin(_): Admin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let Query(q) =
        query.map_err(|e| ApiError::bad_request(ErrorCode::QueryInvalid, e.body_text()))?;
    Ok(Json(ops::audit(&state.authority, q.limit).await?))
}

/// The node behind the client certificate of this connection.
/// The node a lease or report request speaks for: a member's certificate for the lease, a
/// certificate the node may report with for a report.
pub(super) async fn node_of(
    state: &AppState,
    presented: Option<std::sync::Arc<Vec<u8>>>,
    action: &'static str,
) -> Result<String, ApiError> {
    let der = required_certificate(state, presented, action).await?;
    let node = match action {
        "report" => state.authority.reporting_node(&der, now()).await,
        _ => {
            state
                .authority
                .member_node(&der, "take the restart lease", now())
                .await
        }
    };
    match node {
        Ok(node) => Ok(node),
        Err(e) => Err(refused(state, action, "client-certificate", e).await),
    }
}

/// An agent reports what it installed and what etcd runs with (mTLS).
pub async fn agent_report(
    State(state): State<AppState>,
    ClientCertificate(presented): ClientCertificate,
    ApiJson(body): ApiJson<ReportBody>,
) -> Result<StatusCode, ApiError> {
    let node = node_of(&state, presented, "report").await?;
    state
        .authority
        .record_node_report(
            &node,
            body.installed_bundle,
            body.running_bundle,
            body.certificates,
            crate::wire::ReportDetails {
                agent: body.agent,
                served: body.served,
            }
            .to_json(),
            now(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Takes the restart lease (mTLS): one member restarts at a time.
pub async fn take_lease(
    State(state): State<AppState>,
    ClientCertificate(presented): ClientCertificate,
) -> Result<Json<Lease>, ApiError> {
    let node = node_of(&state, presented, "lease").await?;
    let expires_at = state.authority.take_restart_lease(&node, now()).await?;
    Ok(Json(Lease { node, expires_at }))
}

pub async fn release_lease(
    State(state): State<AppState>,
    ClientCertificate(presented): ClientCertificate,
) -> Result<StatusCode, ApiError> {
    let node = node_of(&state, presented, "lease").await?;
    state.authority.release_restart_lease(&node).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every admin token (ids, creators, expiry, revocation; never a secret).
pub async fn admin_tokens(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<Vec<crate::wire::AdminTokenInfo>>, ApiError> {
    Ok(Json(ops::admin_tokens(&state.authority).await?))
}

/// Revokes an admin token (the caller's own too): refused from the next request on.
pub async fn revoke_admin_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<AdminTokenRevoked>, ApiError> {
    let revoked = ops::revoke_admin_token(&state.authority, &id, &admin.0, now()).await;
    Ok(Json(
        audited(&state, "admin-token.revoke", &admin.0, revoked).await?,
    ))
}

/// A consistent backup of the whole CA (see [`crate::authority::Authority::backup_archive`]): a tar archive
/// holding the sealed CA keys, for an admin only.
pub async fn backup(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Response, ApiError> {
    let (archive, summary) = state.authority.backup_archive(&admin.0, now()).await?;
    // Streamed from the (unnamed) file: the server holds a buffer, not the archive.
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(archive),
    ));
    let headers: [(header::HeaderName, String); 5] = [
        (header::CONTENT_TYPE, "application/x-tar".to_string()),
        (header::CONTENT_LENGTH, summary.bytes.to_string()),
        (
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"etcd-ca-backup.tar\"".to_string(),
        ),
        (
            header::HeaderName::from_static(BACKUP_GENERATIONS),
            summary.generations.to_string(),
        ),
        (
            header::HeaderName::from_static(BACKUP_CERTIFICATES),
            summary.certificates.to_string(),
        ),
    ];
    Ok((headers, body).into_response())
}

/// `POST /v1/tidy`: removes what is past its retention (`{"dry_run": true}` only counts).
pub async fn tidy(
    State(state): State<AppState>,
    Admin(admin): Admin,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<crate::wire::TidyAnswer>, ApiError> {
    let body: crate::wire::TidyBody = optional_json(&headers, &body)?.unwrap_or_default();
    let done = ops::tidy(&state.authority, body, &admin.0, now()).await;
    Ok(Json(audited(&state, "tidy", &admin.0, done).await?))
}

/// Every node with what it was issued, what its agent installed and what its member serves.
pub async fn fleet(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<crate::wire::Fleet>, ApiError> {
    Ok(Json(ops::fleet(&state.authority, now()).await?))
}

pub async fn rotation_status(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<crate::wire::RotationStatus>, ApiError> {
    Ok(Json(ops::rotation_status(&state.authority, now()).await?))
}

/// `POST /v1/rotation/{step}`: start, activate, finish or abort.
pub async fn rotate(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(step): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<crate::wire::RotationStatus>, ApiError> {
    let body: RotateBody = optional_json(&headers, &body)?.unwrap_or_default();
    let done = ops::rotate(&state.authority, &step, body, &admin.0, now()).await;
    match audited(&state, &format!("ca.rotate.{step}"), &admin.0, done).await? {
        Some(status) => Ok(Json(status)),
        None => Err(ApiError::NotFound),
    }
}
