//! The CA, rotation and audit pages: each reads what the admin API reads (the generations and
//! CRL, the rotation status, the audit trail with a lookup by serial or node) and renders it.
//! Every value is escaped.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::html::{esc, internal, layout, short, time_left};
use super::{page_response, UiAdmin};
use crate::api::{ops, AppState};
use crate::clock::now;
use crate::duration::rfc3339;
use crate::wire::{AuditEntry, CertificateInfo, CertsQuery, RotationStatus};

pub async fn ca(State(state): State<AppState>, _admin: UiAdmin) -> Response {
    let now = now();
    let authority = &state.authority;
    let mut body = String::from(
        "<h2>Generations</h2><table id=\"generations\"><thead><tr><th>Generation</th><th>State</th>\
<th>Fingerprint</th><th>Not before</th><th>Not after</th><th>Time left</th><th>Activated</th>\
<th>Retired</th></tr></thead><tbody>",
    );
    for g in authority.generations() {
        let _ = write!(
            body,
            "<tr data-generation=\"{}\" data-state=\"{}\"><td>{}</td><td>{}</td><td><code>{}</code></td>\
<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            g.id,
            esc(g.state.as_str()),
            g.id,
            esc(g.state.as_str()),
            esc(&g.fingerprint),
            esc(&rfc3339(g.not_before)),
            esc(&rfc3339(g.not_after)),
            esc(&time_left(g.not_after, now)),
            g.activated_at.map_or("-".into(), |t| esc(&rfc3339(t))),
            g.retired_at.map_or("-".into(), |t| esc(&rfc3339(t))),
        );
    }
    body.push_str("</tbody></table><h2>CRL</h2>");
    match authority
        .current_crl(now)
        .await
        .map(|der| crate::pki::crl_contents(&der))
    {
        Ok(Ok((_, crl))) => {
            let _ = write!(
                body,
                "<table id=\"crl\"><tr><th>Number</th><td>{}</td></tr><tr><th>This update</th><td>{}</td></tr>\
<tr><th>Next update</th><td>{}</td></tr><tr><th>Revoked</th><td>{}</td></tr></table>",
                crl.number.map_or("-".into(), |n| n.to_string()),
                esc(&rfc3339(crl.this_update)),
                crl.next_update
                    .map_or("-".into(), |t| format!("{} (in {})", esc(&rfc3339(t)), esc(&time_left(t, now)))),
                crl.revoked.len()
            );
        }
        Ok(Err(e)) => {
            let _ = write!(
                body,
                "<p class=\"error\">the CRL does not parse: {}</p>",
                esc(&e.to_string())
            );
        }
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"error\">no CRL: {}</p>",
                esc(&e.to_string())
            );
        }
    }
    let _ = write!(
        body,
        "<h2>Trust bundle</h2><p class=\"hint\">What agents install as <code>ca.crt</code> \
(<code>GET /v1/ca</code>).</p><pre id=\"bundle\">{}</pre>",
        esc(&authority.trust_bundle_pem())
    );
    page_response(StatusCode::OK, layout("CA", "ca", None, &body))
}

pub async fn rotation(State(state): State<AppState>, _admin: UiAdmin) -> Response {
    match ops::rotation_status(&state.authority, now()).await {
        Ok(status) => page_response(StatusCode::OK, render_rotation(&status)),
        Err(e) => internal(e),
    }
}

fn render_rotation(s: &RotationStatus) -> String {
    let gens = |v: &Option<Vec<i64>>| {
        v.as_ref().map_or("no report".into(), |v| {
            v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        })
    };
    let mut body = format!(
        "<p class=\"phase\">Phase: <strong id=\"phase\">{}</strong></p><table id=\"rotation\">\
<tr><th>Signing</th><td>generation {} <code>{}</code>, until {}</td></tr>",
        esc(&s.phase),
        s.active.id,
        esc(&s.active.fingerprint),
        esc(&rfc3339(s.active.not_after))
    );
    if let Some(o) = &s.other {
        let _ = write!(
            body,
            "<tr><th>{}</th><td>generation {} <code>{}</code></td></tr>",
            if s.phase == "activated" {
                "Retiring"
            } else {
                "Introduced"
            },
            o.id,
            esc(&o.fingerprint)
        );
    }
    let _ = write!(
        body,
        "<tr><th>Next step</th><td id=\"next-step\">{}</td></tr><tr><th>Blocked by</th><td id=\"blocked-by\">{}</td></tr>\
<tr><th>Restart lease</th><td id=\"lease\">{}</td></tr><tr><th>Last step</th><td id=\"last-step\">{}</td></tr></table>",
        s.next_step.as_deref().map_or("none".into(), esc),
        if s.blocked_by.is_empty() { "nothing".into() } else { esc(&s.blocked_by.join("; ")) },
        s.restart_lease
            .as_ref()
            .map_or("free".into(), |(node, until)| format!("{} until {}", esc(node), esc(until))),
        s.last_step.as_ref().map_or("none".into(), |l| format!(
            "{} at {}: {}",
            esc(&l.step),
            esc(&rfc3339(l.at)),
            esc(&l.outcome)
        )),
    );
    body.push_str(
        "<h2>Nodes</h2><table id=\"rotation-nodes\"><thead><tr><th>Node</th><th>Member</th>\
<th>Installed bundle</th><th>Running bundle</th><th>Certificates (generation)</th><th>Reported</th>\
<th>Waiting for</th></tr></thead><tbody>",
    );
    for n in &s.nodes {
        let certs = n
            .certificates
            .iter()
            .map(|(p, g)| format!("{}: {g}", esc(p)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            body,
            "<tr data-node=\"{node}\" class=\"{stale}\"><td>{node}</td><td>{member}</td><td>{installed}</td><td>{running}</td>\
<td>{certs}</td><td>{reported}</td><td>{waiting}</td></tr>",
            node = esc(&n.node),
            stale = if n.stale { "m-stale" } else { "" },
            member = if n.member { "yes" } else { "no" },
            installed = gens(&n.installed_bundle),
            running = gens(&n.running_bundle),
            reported = n.reported_at.map_or("never".into(), |t| esc(&rfc3339(t))),
            waiting = n.waiting_for.as_deref().map_or("-".into(), esc),
        );
    }
    body.push_str(
        "</tbody></table><p class=\"hint\">This page follows the rotation: it reloads every 3 seconds. \
Steps are taken with <code>etcd-ca ca rotate</code>.</p>",
    );
    layout("Rotation", "rotation", Some(3), &body)
}

#[derive(serde::Deserialize, Default)]
pub struct AuditQuery {
    serial: Option<String>,
    node: Option<String>,
}

pub async fn audit(
    State(state): State<AppState>,
    _admin: UiAdmin,
    Query(query): Query<AuditQuery>,
) -> Response {
    let now = now();
    let authority = &state.authority;
    // As every serial is stored: lower-case hex without colons (a malformed one is shown as
    // given, and the lookup says why it found nothing).
    let serial: Option<String> = query
        .serial
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| crate::authority::normalize_serial(s).unwrap_or_else(|_| s.to_string()));
    let serial = serial.as_deref();
    let node = query
        .node
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut body = format!(
        "<form class=\"filter\" method=\"get\" action=\"/ui/audit\">\
<input type=\"search\" name=\"serial\" id=\"serial\" placeholder=\"serial\" value=\"{}\">\
<input type=\"search\" name=\"node\" id=\"node\" placeholder=\"node\" value=\"{}\">\
<button type=\"submit\">Look up</button></form>",
        esc(serial.unwrap_or("")),
        esc(node.unwrap_or(""))
    );
    let mut certificates: Vec<CertificateInfo> = Vec::new();
    if let Some(serial) = serial {
        match ops::certificate(authority, serial, now).await {
            Ok(c) => certificates.push(c),
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"error\" id=\"lookup-error\">{}</p>",
                    esc(&e.to_string())
                );
            }
        }
    }
    if let Some(node) = node {
        let query = CertsQuery {
            node: Some(node.to_string()),
            limit: Some(100),
            ..Default::default()
        };
        match ops::certificates(authority, query, now).await {
            Ok(page) => certificates.extend(page.certificates),
            Err(e) => {
                let _ = write!(
                    body,
                    "<p class=\"error\" id=\"lookup-error\">{}</p>",
                    esc(&e.to_string())
                );
            }
        }
    }
    if serial.is_some() || node.is_some() {
        body.push_str(
            "<h2>Certificates</h2><table id=\"certificates\"><thead><tr><th>Serial</th><th>Node</th>\
<th>Profile</th><th>Gen.</th><th>SANs</th><th>Not after</th><th>Status</th></tr></thead><tbody>",
        );
        for c in &certificates {
            let _ = write!(
                body,
                "<tr data-serial=\"{serial}\" data-status=\"{status}\"><td><a href=\"/ui/audit?serial={serial}\"><code>{serial}</code></a></td>\
<td>{node}</td><td>{profile}</td><td>{gen}</td><td>{sans}</td><td>{not_after}</td><td>{status}{revoked}</td></tr>",
                serial = esc(&c.serial),
                node = esc(&c.node),
                profile = esc(&c.profile),
                gen = c.ca_generation,
                sans = esc(&c.sans.join(", ")),
                not_after = esc(&rfc3339(c.not_after)),
                status = esc(&c.status),
                revoked = c.revoked_at.map_or(String::new(), |t| format!(
                    " at {}{}",
                    esc(&rfc3339(t)),
                    c.revocation_reason.as_deref().map_or(String::new(), |r| format!(" ({})", esc(r)))
                )),
            );
        }
        body.push_str("</tbody></table>");
        if certificates.is_empty() {
            body.push_str("<p class=\"quiet\" id=\"lookup-empty\">No certificate was found.</p>");
        }
    }
    match ops::audit(authority, Some(500)).await {
        Ok(events) => {
            // The events of either the serial or the node looked up (all without a lookup).
            let wanted = |e: &&AuditEntry| {
                let of_serial = serial.is_some_and(|s| e.serial.as_deref() == Some(s));
                let of_node = node.is_some_and(|n| e.node.as_deref() == Some(n));
                (serial.is_none() && node.is_none()) || of_serial || of_node
            };
            let events: Vec<&AuditEntry> = events.iter().rev().filter(wanted).take(200).collect();
            let _ = write!(
                body,
                "<h2>Audit events</h2><p class=\"hint\">The most recent first{}.</p>\
<table id=\"audit\"><thead><tr><th>At</th><th>Actor</th><th>Action</th><th>Node</th><th>Serial</th>\
<th>Detail</th></tr></thead><tbody>",
                if serial.is_some() || node.is_some() {
                    ", among the last 500"
                } else {
                    ""
                }
            );
            for e in events {
                let _ = write!(
                    body,
                    "<tr data-action=\"{action}\"><td>{at}</td><td>{actor}</td><td>{action}</td><td>{node}</td><td>{serial}</td><td>{detail}</td></tr>",
                    at = esc(&rfc3339(e.at)),
                    actor = esc(&e.actor),
                    action = esc(&e.action),
                    node = e.node.as_deref().map_or(String::new(), |n| format!("<a href=\"/ui/audit?node={n}\">{n}</a>", n = esc(n))),
                    serial = e.serial.as_deref().map_or(String::new(), |s| format!("<a href=\"/ui/audit?serial={s}\"><code>{}</code></a>", esc(&short(s)), s = esc(s))),
                    detail = esc(&e.detail),
                );
            }
            body.push_str("</tbody></table>");
        }
        Err(e) => {
            let _ = write!(body, "<p class=\"error\">{}</p>", esc(&e.to_string()));
        }
    }
    page_response(StatusCode::OK, layout("Audit", "audit", None, &body))
}
