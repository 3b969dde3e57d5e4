//! Thin handlers: read the request, call the authority, shape the answer.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use super::error::{authority_status, ApiError};
use super::extract::{Admin, ApiJson, ClientAddr, ClientCertificate, OptionalAdmin};
use super::AppState;
use crate::authority::{AuthorityError, CrlIssuer, IssueRequest, RevocationReason, TokenRequest};
use crate::duration::HumanDuration;
use crate::names::{DnsName, NodeName};
use crate::pki::KeyType;
use crate::store::{CertificateFilter, CertificateState};
use crate::wire::{
    AdminTokenRevoked, AuditEntry, AuditQuery, CertificateInfo, CertsQuery, CrlQuery, EnrollBody,
    Enrollment, Health, IssueBody, IssueResponse, Lease, RenewBody, RenewNodeBody, RenewedNode,
    ReportBody, RevokeBody, RotateBody, SignBody, TokenBody, TokenResponse, WatchAnswer,
    WatchQuery, BACKUP_CERTIFICATES, BACKUP_GENERATIONS,
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
            code: "content_type_unsupported",
            message: "send the body as Content-Type: application/json".into(),
        });
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::bad_request("body_invalid", format!("invalid JSON body: {e}")))
}

fn parse_names(
    node: &str,
    ips: &[String],
    dns_names: &[String],
) -> Result<(NodeName, Vec<IpAddr>, Vec<DnsName>), ApiError> {
    let invalid = |m: String| ApiError::bad_request("name_invalid", m);
    let node = node
        .parse()
        .map_err(|e: crate::names::NameError| invalid(e.to_string()))?;
    let ips = ips
        .iter()
        .map(|ip| {
            ip.parse()
                .map_err(|_| invalid(format!("invalid IP address {ip:?}")))
        })
        .collect::<Result<_, _>>()?;
    let dns = dns_names
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|e: crate::names::NameError| invalid(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    Ok((node, ips, dns))
}

fn parse_duration(field: &'static str, text: &str) -> Result<Duration, ApiError> {
    parse_human_duration(field, text).map(HumanDuration::as_std)
}

fn parse_human_duration(field: &'static str, text: &str) -> Result<HumanDuration, ApiError> {
    text.parse::<HumanDuration>()
        .map_err(|e| ApiError::bad_request("body_invalid", format!("{field}: {e}")))
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
    tracing::info!(action, actor, code, reason = %e, "refused");
    ApiError::Authority(e)
}

// ---- public ----

pub async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
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
        let invalid = |m: &str| ApiError::bad_request("query_invalid", m);
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
    let Query(q) = query.map_err(|e| ApiError::bad_request("query_invalid", e.body_text()))?;
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
    let Query(q) = query.map_err(|e| ApiError::bad_request("query_invalid", e.body_text()))?;
    let wait = match &q.wait {
        Some(w) => parse_duration("wait", w)?.min(super::MAX_WATCH),
        None => super::MAX_WATCH,
    };
    let mut watched = state.watched.clone();
    let differs = |w: &super::follow::Watched| w.closing || Some(&w.version) != q.version.as_ref();
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

// ---- nodes ----

pub async fn enroll(
    State(state): State<AppState>,
    ClientAddr(source): ClientAddr,
    ApiJson(body): ApiJson<EnrollBody>,
) -> Result<Json<Enrollment>, ApiError> {
    let token_id = crate::authority::token_id(&body.token);
    let started = std::time::Instant::now();
    state.limiter.check_token(token_id, started)?;
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
                if let Some(locked) = state.limiter.failed(source, token_id, started) {
                    state.metrics.refused("enroll", authority_status(&e).1);
                    return Err(locked);
                }
            }
            Err(refused(&state, "enroll", "token", e).await)
        }
    }
}

/// The client certificate of this connection, or a counted and audited refusal.
async fn required_certificate(
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

// ---- admin ----

/// Signs a CSR on an admin's word (`cfssl sign`): for consumers that make their own keys.
pub async fn sign(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Json<crate::wire::Certificate>, ApiError> {
    let ips = body.ips.unwrap_or_default();
    let dns = body.dns_names.unwrap_or_default();
    let (node, ips, dns) = parse_names(&body.node, &ips, &dns)?;
    let names = (!ips.is_empty() || !dns.is_empty()).then_some((ips, dns));
    let issued = state
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
        .await?;
    state.metrics.issued(&issued.profile);
    Ok(Json(issued.into()))
}

pub async fn create_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<TokenBody>,
) -> Result<Json<TokenResponse>, ApiError> {
    let (node, ips, dns_names) = parse_names(&body.node, &body.ips, &body.dns_names)?;
    let ttl = parse_duration("ttl", body.ttl.as_deref().unwrap_or("30m"))?;
    let request = TokenRequest {
        node,
        ips,
        dns_names,
        profiles: body.profiles,
        common_name: body.common_name,
        ttl,
        allow_privileged_common_name: body.allow_root,
    };
    let token = state
        .authority
        .create_bootstrap_token(&request, &admin.0, now())
        .await?;
    Ok(Json(TokenResponse {
        token: token.token,
        id: token.id,
        expires_at: token.expires_at,
        node: token.node,
        profiles: token.profiles,
        ca_fingerprint: state.authority.fingerprint()?.to_string(),
    }))
}

pub async fn list_certs(
    State(state): State<AppState>,
    Admin(_): Admin,
    query: Result<Query<CertsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<CertificateInfo>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query_invalid", e.body_text()))?;
    let now = now();
    let wanted = q
        .status
        .map(|s| s.parse::<CertificateState>())
        .transpose()
        .map_err(|e| ApiError::bad_request("query_invalid", e))?;
    let expiring_before = q
        .expiring_within
        .map(|d| parse_duration("expiring_within", &d))
        .transpose()?
        .map(|d| now + time::Duration::try_from(d).unwrap_or(time::Duration::MAX));
    let filter = CertificateFilter {
        node: q.node,
        profile: q.profile,
        state: wanted,
        expiring_before,
        ..Default::default()
    };
    let records = state.authority.certificates(&filter, now).await?;
    Ok(Json(records.into_iter().map(Into::into).collect()))
}

pub async fn show_cert(
    State(state): State<AppState>,
    Admin(_): Admin,
    Path(serial): Path<String>,
) -> Result<Json<CertificateInfo>, ApiError> {
    Ok(Json(
        state.authority.certificate(&serial, now()).await?.into(),
    ))
}

pub async fn revoke_cert(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(serial): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<CertificateInfo>, ApiError> {
    let body: Option<RevokeBody> = optional_json(&headers, &body)?;
    let reason: RevocationReason = body
        .and_then(|b| b.reason)
        .as_deref()
        .unwrap_or("unspecified")
        .parse()?;
    Ok(Json(
        state
            .authority
            .revoke(&serial, reason, &admin.0, now())
            .await?
            .into(),
    ))
}

/// Server-side key generation, for consumers that cannot run the agent (kube-apiserver's etcd
/// client certificate). The key travels once, over this TLS connection, to an admin.
pub async fn issue(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<IssueBody>,
) -> Result<Json<IssueResponse>, ApiError> {
    let (node, ips, dns_names) = parse_names(&body.node, &body.ips, &body.dns_names)?;
    let key_type = match body.key_type.as_deref() {
        Some(k) => k
            .parse::<KeyType>()
            .map_err(|e| ApiError::bad_request("body_invalid", e))?,
        None => KeyType::EcdsaP256,
    };
    let at = now();
    let request = IssueRequest {
        profile: body.profile,
        node,
        ips,
        dns_names,
        common_name: body.common_name,
        // Years and months on the calendar, from now.
        lifetime: body
            .lifetime
            .map(|l| parse_human_duration("lifetime", &l).map(|d| d.span_from(at)))
            .transpose()?,
        key_type,
        allow_privileged_common_name: body.allow_root,
    };
    let issued = state
        .authority
        .issue_with_new_key(&request, &admin.0, at)
        .await?;
    state.metrics.issued(&issued.certificate.profile);
    Ok(Json(IssueResponse {
        certificate: issued.certificate.into(),
        private_key_pem: issued.key_pem,
        trust_bundle: state.authority.trust_bundle_pem(),
    }))
}

pub async fn audit(
    State(state): State<AppState>,
    Admin(_): Admin,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("query_invalid", e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let events = state.authority.audit_events(limit).await?;
    Ok(Json(events.into_iter().map(Into::into).collect()))
}

// ---- rotation ----

/// The node behind the client certificate of this connection.
/// The node a lease or report request speaks for: a member's certificate for the lease, a
/// certificate the node may report with for a report.
async fn node_of(
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
) -> Result<Json<Vec<crate::authority::AdminTokenView>>, ApiError> {
    Ok(Json(state.authority.admin_tokens().await?))
}

/// Revokes an admin token (the caller's own too): refused from the next request on.
pub async fn revoke_admin_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Json<AdminTokenRevoked>, ApiError> {
    state
        .authority
        .revoke_admin_token(&id, &admin.0, now())
        .await?;
    Ok(Json(AdminTokenRevoked { id, revoked: true }))
}

/// A consistent backup of the whole CA (see [`crate::authority::Authority::backup_archive`]): a tar archive
/// holding the sealed CA keys, for an admin only.
pub async fn backup(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> Result<Response, ApiError> {
    let (archive, summary) = state.authority.backup_archive(&admin.0, now()).await?;
    let headers = [
        (header::CONTENT_TYPE, "application/x-tar".to_string()),
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
    Ok((headers, archive).into_response())
}

pub async fn rotation_status(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Json<crate::authority::rotation::RotationStatus>, ApiError> {
    Ok(Json(state.authority.rotation_status(now()).await?))
}

/// `POST /v1/rotation/{step}`: start, activate, finish or abort.
pub async fn rotate(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(step): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<crate::authority::rotation::RotationStatus>, ApiError> {
    let body: RotateBody = optional_json(&headers, &body)?.unwrap_or_default();
    let authority = &state.authority;
    let now = now();
    match step.as_str() {
        "start" => {
            let key_type = match body.key_type.as_deref() {
                Some(k) => k
                    .parse::<KeyType>()
                    .map_err(|e| ApiError::bad_request("body_invalid", e))?,
                None => KeyType::EcdsaP256,
            };
            authority.rotate_start(key_type, &admin.0, now).await?;
        }
        "activate" => authority.rotate_activate(body.force, &admin.0, now).await?,
        "finish" => authority.rotate_finish(body.force, &admin.0, now).await?,
        "abort" => authority.rotate_abort(&admin.0, now).await?,
        _ => return Err(ApiError::NotFound),
    }
    Ok(Json(authority.rotation_status(now).await?))
}
