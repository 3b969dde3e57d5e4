//! The admin operations, from wire request to wire answer: the same code serves an admin
//! through the API and the CLI on the CA host (`cli::target`), so both read a request the same
//! way and answer with the same types. The HTTP handlers add authentication, metrics and the
//! audit of refusals around them.

use std::net::IpAddr;

use time::OffsetDateTime;

use super::error::ApiError;
use crate::authority::{Authority, IssueRequest, RevocationReason, TokenRequest};
use crate::duration::HumanDuration;
use crate::names::{DnsName, NodeName};
use crate::pki::KeyType;
use crate::store::{CertificateCursor, CertificateFilter, CertificateState, MAX_PAGE};
use crate::wire::{
    AdminTokenInfo, AdminTokenRevoked, AuditEntry, CertificateInfo, CertificatePage, CertsQuery,
    ErrorCode, IssueBody, IssueResponse, RevokeBody, RotateBody, RotationStatus, TidyAnswer,
    TidyBody, TokenBody, TokenResponse,
};

/// A node's name and addresses from their wire text.
pub fn parse_names(
    node: &str,
    ips: &[String],
    dns_names: &[String],
) -> Result<(NodeName, Vec<IpAddr>, Vec<DnsName>), ApiError> {
    let invalid = |m: String| ApiError::bad_request(ErrorCode::NameInvalid, m);
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

/// A duration field of a request.
pub fn parse_duration(field: &'static str, text: &str) -> Result<HumanDuration, ApiError> {
    text.parse::<HumanDuration>()
        .map_err(|e| ApiError::bad_request(ErrorCode::BodyInvalid, format!("{field}: {e}")))
}

/// A bootstrap token for a node, and the fingerprint its agent pins.
pub async fn create_token(
    authority: &Authority,
    body: TokenBody,
    actor: &str,
    now: OffsetDateTime,
) -> Result<TokenResponse, ApiError> {
    let (node, ips, dns_names) = parse_names(&body.node, &body.ips, &body.dns_names)?;
    let ttl = parse_duration("ttl", body.ttl.as_deref().unwrap_or("30m"))?.as_std();
    let request = TokenRequest {
        node,
        ips,
        dns_names,
        profiles: body.profiles,
        common_name: body.common_name,
        ttl,
        allow_privileged_common_name: body.allow_root,
    };
    let token = authority
        .create_bootstrap_token(&request, actor, now)
        .await?;
    Ok(TokenResponse {
        token: token.token,
        id: token.id,
        expires_at: token.expires_at,
        node: token.node,
        profiles: token.profiles,
        ca_fingerprint: authority.fingerprint()?.to_string(),
    })
}

/// One page of the recorded certificates a query asks for, soonest expiry first.
pub async fn certificates(
    authority: &Authority,
    query: CertsQuery,
    now: OffsetDateTime,
) -> Result<CertificatePage, ApiError> {
    let state = query
        .status
        .map(|s| s.parse::<CertificateState>())
        .transpose()
        .map_err(|e| ApiError::bad_request(ErrorCode::QueryInvalid, e))?;
    let expiring_before = query
        .expiring_within
        .map(|d| {
            d.parse::<HumanDuration>().map_err(|e| {
                ApiError::bad_request(ErrorCode::QueryInvalid, format!("expiring_within: {e}"))
            })
        })
        .transpose()?
        .map(|d| now + d.as_time());
    let after = query
        .after
        .map(|a| a.parse::<CertificateCursor>())
        .transpose()
        .map_err(|e| ApiError::bad_request(ErrorCode::QueryInvalid, e))?;
    let limit = match query.limit {
        Some(n) if n == 0 || n > MAX_PAGE => {
            return Err(ApiError::bad_request(
                ErrorCode::QueryInvalid,
                format!("limit must be between 1 and {MAX_PAGE}"),
            ))
        }
        Some(n) => n,
        None => MAX_PAGE,
    };
    let filter = CertificateFilter {
        node: query.node,
        profile: query.profile,
        state,
        expiring_before,
        after,
        // One more than the page holds: whether another page follows, without an empty one.
        limit: Some(limit + 1),
        ..Default::default()
    };
    let mut records = authority.certificates(&filter, now).await?;
    let next = if records.len() > limit as usize {
        records.truncate(limit as usize);
        records
            .last()
            .map(|last| CertificateCursor::after(last).to_string())
    } else {
        None
    };
    Ok(CertificatePage {
        certificates: records.into_iter().map(Into::into).collect(),
        next,
    })
}

/// One recorded certificate.
pub async fn certificate(
    authority: &Authority,
    serial: &str,
    now: OffsetDateTime,
) -> Result<CertificateInfo, ApiError> {
    Ok(authority.certificate(serial, now).await?.into())
}

/// Revokes a certificate (reason `unspecified` unless given).
pub async fn revoke(
    authority: &Authority,
    serial: &str,
    body: RevokeBody,
    actor: &str,
    now: OffsetDateTime,
) -> Result<CertificateInfo, ApiError> {
    let reason: RevocationReason = body
        .reason
        .as_deref()
        .unwrap_or("unspecified")
        .parse()
        .map_err(ApiError::Authority)?;
    Ok(authority.revoke(serial, reason, actor, now).await?.into())
}

/// A certificate for a key made here, with the key and the trust bundle.
pub async fn issue(
    authority: &Authority,
    body: IssueBody,
    actor: &str,
    now: OffsetDateTime,
) -> Result<IssueResponse, ApiError> {
    let (node, ips, dns_names) = parse_names(&body.node, &body.ips, &body.dns_names)?;
    let key_type = match body.key_type.as_deref() {
        Some(k) => k
            .parse::<KeyType>()
            .map_err(|e| ApiError::bad_request(ErrorCode::BodyInvalid, e))?,
        None => KeyType::EcdsaP256,
    };
    let request = IssueRequest {
        profile: body.profile,
        node,
        ips,
        dns_names,
        common_name: body.common_name,
        // Years and months on the calendar, from now.
        lifetime: body
            .lifetime
            .map(|l| parse_duration("lifetime", &l).map(|d| d.span_from(now)))
            .transpose()?,
        key_type,
        allow_privileged_common_name: body.allow_root,
    };
    let issued = authority.issue_with_new_key(&request, actor, now).await?;
    Ok(IssueResponse {
        certificate: issued.certificate.into(),
        private_key_pem: issued.key_pem,
        trust_bundle: authority.trust_bundle_pem(),
    })
}

/// The most recent audit events (1 to 10,000; 100 by default).
pub async fn audit(authority: &Authority, limit: Option<i64>) -> Result<Vec<AuditEntry>, ApiError> {
    // The most recent 10,000 at most; asking for none is a mistake.
    let limit = match limit {
        None => 100,
        Some(n) if n >= 1 => n.min(10_000),
        Some(n) => {
            return Err(ApiError::bad_request(
                ErrorCode::QueryInvalid,
                format!("limit must be at least 1 (not {n})"),
            ))
        }
    };
    let events = authority.audit_events(limit).await?;
    Ok(events.into_iter().map(Into::into).collect())
}

/// Removes what is past its retention, or with `dry_run` counts it.
pub async fn tidy(
    authority: &Authority,
    body: TidyBody,
    actor: &str,
    now: OffsetDateTime,
) -> Result<TidyAnswer, ApiError> {
    Ok(authority.tidy(body.dry_run, true, actor, now).await?.into())
}

/// Revokes an admin token (refused from the next request on).
pub async fn revoke_admin_token(
    authority: &Authority,
    id: &str,
    actor: &str,
    now: OffsetDateTime,
) -> Result<AdminTokenRevoked, ApiError> {
    authority.revoke_admin_token(id, actor, now).await?;
    Ok(AdminTokenRevoked {
        id: id.to_string(),
        revoked: true,
    })
}

/// Every admin token (never its secret).
pub async fn admin_tokens(authority: &Authority) -> Result<Vec<AdminTokenInfo>, ApiError> {
    let tokens = authority.admin_tokens().await?;
    Ok(tokens.into_iter().map(Into::into).collect())
}

/// Where the CA rotation stands.
pub async fn rotation_status(
    authority: &Authority,
    now: OffsetDateTime,
) -> Result<RotationStatus, ApiError> {
    Ok(authority.rotation_status(now).await?.into())
}

/// Every node with what it was issued, installed and serves, marked.
pub async fn fleet(
    authority: &Authority,
    now: OffsetDateTime,
) -> Result<crate::wire::Fleet, ApiError> {
    Ok(super::fleet::fleet(authority, now).await?)
}

/// A rotation step by name (`start`, `activate`, `finish`, `abort`), then where it stands.
/// `Ok(None)` for a step that does not exist.
pub async fn rotate(
    authority: &Authority,
    step: &str,
    body: RotateBody,
    actor: &str,
    now: OffsetDateTime,
) -> Result<Option<RotationStatus>, ApiError> {
    match step {
        "start" => {
            let key_type = match body.key_type.as_deref() {
                Some(k) => k
                    .parse::<KeyType>()
                    .map_err(|e| ApiError::bad_request(ErrorCode::BodyInvalid, e))?,
                None => KeyType::EcdsaP256,
            };
            authority.rotate_start(key_type, actor, now).await?;
        }
        "activate" => authority.rotate_activate(body.force, actor, now).await?,
        "finish" => authority.rotate_finish(body.force, actor, now).await?,
        "abort" => authority.rotate_abort(actor, now).await?,
        _ => return Ok(None),
    }
    rotation_status(authority, now).await.map(Some)
}
