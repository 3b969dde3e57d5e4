//! The web view's pages: each reads what the admin API reads (the fleet, the generations and
//! CRL, the rotation status, the audit trail) and renders it as HTML. Every value is escaped;
//! rows carry `data-` attributes (node, profile, marks, seconds left) that tests and scripts
//! can rely on.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;

use super::{page_response, UiAdmin};
use crate::api::fleet::{self, marks};
use crate::api::{ops, AppState};
use crate::clock::now;
use crate::duration::rfc3339;
use crate::wire::{AuditEntry, CertificateInfo, CertsQuery, Fleet, FleetEntry, RotationStatus};

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "89d 23h", "5h 02m", "40s", or "expired 3d 2h ago".
pub fn time_left(not_after: OffsetDateTime, now: OffsetDateTime) -> String {
    let left = not_after - now;
    let span = |d: time::Duration| {
        let s = d.whole_seconds().abs();
        match s {
            s if s >= 86_400 => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
            s if s >= 3600 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
            s if s >= 60 => format!("{}m {:02}s", s / 60, s % 60),
            s => format!("{s}s"),
        }
    };
    if left.is_negative() {
        format!("expired {} ago", span(left))
    } else {
        span(left)
    }
}

/// A time in a table cell: to the minute, one line; the exact time on hover.
fn when(t: OffsetDateTime) -> String {
    let full = rfc3339(t);
    let short = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    );
    format!(
        "<time datetime=\"{}\" title=\"{}\">{short}</time>",
        esc(&full),
        esc(&full)
    )
}

/// The frame of every page: title, navigation, and an optional refresh for pages that follow
/// something as it happens.
fn layout(title: &str, current: &str, refresh_seconds: Option<u32>, body: &str) -> String {
    let refresh = refresh_seconds
        .map(|s| format!("<meta http-equiv=\"refresh\" content=\"{s}\">"))
        .unwrap_or_default();
    let nav: String = [
        ("fleet", "Fleet"),
        ("ca", "CA"),
        ("rotation", "Rotation"),
        ("audit", "Audit"),
    ]
    .iter()
    .map(|(path, label)| {
        let class = if *path == current {
            " class=\"current\""
        } else {
            ""
        };
        format!("<a href=\"/ui/{path}\"{class}>{label}</a>")
    })
    .collect();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · etcd-ca</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
<body><header><span class=\"brand\">etcd-ca</span><nav>{nav}</nav>\
<form method=\"post\" action=\"/ui/logout\"><button type=\"submit\">Log out</button></form></header>\
<main><h1>{title}</h1>{body}</main></body></html>\n",
        title = esc(title)
    )
}

/// The login page (the only page shown without credentials).
pub fn login(error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" id=\"login-error\">{}</p>", esc(e)))
        .unwrap_or_default();
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Log in · etcd-ca</title><link rel=\"stylesheet\" href=\"/ui/style.css\"></head>\
<body class=\"login\"><main><h1>etcd-ca</h1>{error}\
<form method=\"post\" action=\"/ui/login\" id=\"login\">\
<label for=\"token\">Admin token</label>\
<input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"off\" autofocus>\
<button type=\"submit\">Log in</button></form>\
<p class=\"hint\">Create one on the CA host with <code>etcd-ca admin-token create</code>, \
or open this page with an admin client certificate.</p></main></body></html>\n"
    )
}

fn internal(e: impl std::fmt::Display) -> Response {
    page_response(
        StatusCode::SERVICE_UNAVAILABLE,
        layout(
            "Unavailable",
            "",
            Some(10),
            &format!("<p class=\"error\">{}</p>", esc(&e.to_string())),
        ),
    )
}

#[derive(serde::Deserialize, Default)]
pub struct FleetQuery {
    /// `left` (time left, soonest first: the default) or `node`.
    sort: Option<String>,
    /// Only nodes whose name contains this.
    q: Option<String>,
    /// Only rows carrying this mark (`any`: rows with any mark).
    mark: Option<String>,
    /// At most this many rows (default 500, at most 5,000): a page stays small at any fleet size.
    limit: Option<usize>,
}

/// Rows the fleet page shows unless asked for more, and the most it shows.
const FLEET_ROWS: usize = 500;
const FLEET_ROWS_MAX: usize = 5_000;

/// The seconds left on the certificate a row stands on (installed, else issued).
fn seconds_left(entry: &FleetEntry, now: OffsetDateTime) -> Option<i64> {
    let installed = entry.installed.as_ref().and_then(|c| c.not_after);
    let issued = entry.issued.as_ref().and_then(|c| c.not_after);
    installed.or(issued).map(|t| (t - now).whole_seconds())
}

pub async fn fleet(
    State(state): State<AppState>,
    _admin: UiAdmin,
    Query(query): Query<FleetQuery>,
) -> Response {
    let now = now();
    match fleet::fleet(&state.authority, now).await {
        Ok(fleet) => page_response(StatusCode::OK, render_fleet(&fleet, &query, now)),
        Err(e) => internal(e),
    }
}

fn render_fleet(fleet: &Fleet, query: &FleetQuery, now: OffsetDateTime) -> String {
    let filter = query.q.as_deref().unwrap_or("").trim();
    let mark = query.mark.as_deref().unwrap_or("").trim();
    let mut rows: Vec<(&str, &FleetEntry, &crate::wire::FleetNode)> = fleet
        .nodes
        .iter()
        .filter(|n| filter.is_empty() || n.node.contains(filter))
        .flat_map(|n| n.entries.iter().map(move |e| (n.node.as_str(), e, n)))
        .filter(|(_, e, _)| match mark {
            "" => true,
            "any" => !e.marks.is_empty(),
            m => e.marks.iter().any(|x| x == m),
        })
        .collect();
    let by_node = query.sort.as_deref() == Some("node");
    if by_node {
        rows.sort_by(|a, b| (a.0, &a.1.profile).cmp(&(b.0, &b.1.profile)));
    } else {
        rows.sort_by_key(|(node, e, _)| (seconds_left(e, now).unwrap_or(i64::MAX), *node));
    }
    let matching = rows.len();
    let limit = query.limit.unwrap_or(FLEET_ROWS).clamp(1, FLEET_ROWS_MAX);
    rows.truncate(limit);
    let count = |m: &str| {
        fleet
            .nodes
            .iter()
            .flat_map(|n| &n.entries)
            .filter(|e| e.marks.iter().any(|x| x == m))
            .count()
    };
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"summary\" id=\"summary\">{} nodes, {} certificates · ",
        fleet.nodes.len(),
        fleet.nodes.iter().map(|n| n.entries.len()).sum::<usize>()
    );
    for m in [
        marks::EXPIRED,
        marks::EXPIRING,
        marks::REVOKED,
        marks::MISMATCH,
        marks::STALE,
        marks::FAILING,
        marks::UNREACHABLE,
    ] {
        let n = count(m);
        let class = if n > 0 {
            format!("mark {m}")
        } else {
            "quiet".into()
        };
        let _ = write!(
            body,
            "<a class=\"{class}\" href=\"/ui/fleet?mark={m}\">{n} {m}</a> "
        );
    }
    body.push_str("</p>");
    let sort = if by_node { "node" } else { "left" };
    let _ = write!(
        body,
        "<form class=\"filter\" method=\"get\" action=\"/ui/fleet\">\
<input type=\"hidden\" name=\"sort\" value=\"{sort}\">\
<input type=\"search\" name=\"q\" id=\"filter\" placeholder=\"node name contains\" value=\"{}\">\
<select name=\"mark\" id=\"mark\">{}</select><button type=\"submit\">Filter</button></form>",
        esc(filter),
        [
            "",
            "any",
            "expired",
            "expiring",
            "revoked",
            "mismatch",
            "stale",
            "failing",
            "unreachable"
        ]
        .iter()
        .map(|m| {
            let selected = if *m == mark { " selected" } else { "" };
            let label = if m.is_empty() { "every row" } else { m };
            format!("<option value=\"{m}\"{selected}>{label}</option>")
        })
        .collect::<String>()
    );
    let link = |key: &str, label: &str| {
        let arrow = if key == sort { " ▲" } else { "" };
        format!(
            "<a id=\"sort-{key}\" href=\"/ui/fleet?sort={key}&amp;q={}&amp;mark={}\">{label}{arrow}</a>",
            esc(filter),
            esc(mark)
        )
    };
    let _ = write!(
        body,
        "<table id=\"fleet\"><thead><tr><th>{}</th><th>Profile</th><th>Issued serial</th>\
<th>Gen.</th><th>Not after</th><th>{}</th><th>Installed</th><th>Served</th>\
<th>Next renewal</th><th>Last report</th><th>Last error</th><th>Marks</th></tr></thead><tbody>",
        link("node", "Node"),
        link("left", "Time left")
    );
    for (node, e, n) in &rows {
        let left = seconds_left(e, now);
        let marks_text = e.marks.join(" ");
        let issued = e.issued.as_ref();
        let not_after = e
            .installed
            .as_ref()
            .and_then(|c| c.not_after)
            .or(issued.and_then(|c| c.not_after));
        let installed = e.installed.as_ref().map_or("-".into(), |c| {
            if issued.is_some_and(|i| i.serial == c.serial) {
                format!("same ({})", esc(&c.status))
            } else {
                format!(
                    "<code>{}</code> ({})",
                    esc(&short(&c.serial)),
                    esc(&c.status)
                )
            }
        });
        let served = e
            .served
            .as_ref()
            .map_or("-".into(), |s| match (&s.serial, &s.error) {
                (Some(serial), _) if issued.is_some_and(|i| &i.serial == serial) => {
                    "same".to_string()
                }
                (Some(serial), _) => format!("<code>{}</code>", esc(&short(serial))),
                (None, Some(err)) => format!("<span title=\"{}\">unreadable</span>", esc(err)),
                (None, None) => "-".into(),
            });
        let agent = n.agent.as_ref();
        let _ = write!(
            body,
            "<tr data-node=\"{node}\" data-profile=\"{profile}\" data-marks=\"{marks}\" data-left=\"{left_s}\" class=\"{classes}\">\
<td><a href=\"/ui/audit?node={node}\">{node}</a></td><td>{profile}</td><td><code>{serial}</code></td><td>{gen}</td>\
<td>{not_after}</td><td class=\"left\">{left}</td><td>{installed}</td><td>{served}</td>\
<td>{next}</td><td>{report}</td><td class=\"err\">{error}</td><td>{badges}</td></tr>",
            node = esc(node),
            profile = esc(&e.profile),
            marks = esc(&marks_text),
            left_s = left.map_or(String::new(), |l| l.to_string()),
            classes = e.marks.iter().map(|m| format!("m-{m}")).collect::<Vec<_>>().join(" "),
            serial = issued.map_or("-".into(), |c| format!(
                "<a href=\"/ui/audit?serial={full}\" title=\"{full}\">{}</a>",
                esc(&short(&c.serial)),
                full = esc(&c.serial)
            )),
            gen = issued.and_then(|c| c.generation).map_or("-".into(), |g| g.to_string()),
            not_after = not_after.map_or("-".into(), when),
            left = not_after.map_or("-".into(), |t| esc(&time_left(t, now))),
            next = agent.and_then(|a| a.next_renewal).map_or("-".into(), when),
            report = n.reported_at.map_or("never".into(), |t| format!("{} ago", esc(&time_left(now, t)))),
            error = agent
                .and_then(|a| a.last_error.as_deref())
                .map_or(String::new(), esc),
            badges = e
                .marks
                .iter()
                .map(|m| format!("<span class=\"mark {m}\">{m}</span>", m = esc(m)))
                .collect::<String>(),
        );
    }
    body.push_str("</tbody></table>");
    if rows.is_empty() {
        body.push_str("<p class=\"quiet\">No certificates match.</p>");
    }
    if matching > rows.len() {
        let _ = write!(
            body,
            "<p class=\"hint\" id=\"truncated\">The first {} of {matching} rows; narrow them with the filter, \
or show up to {FLEET_ROWS_MAX} with <a href=\"/ui/fleet?sort={sort}&amp;q={}&amp;mark={}&amp;limit={FLEET_ROWS_MAX}\">more rows</a>.</p>",
            rows.len(),
            esc(filter),
            esc(mark)
        );
    }
    let _ = write!(
        body,
        "<p class=\"hint\">Marks: expiring when under a fifth of its lifetime (and 7 days) is left; \
stale when the agent has not reported for {} minutes; mismatch when the member served another \
certificate than the newest issued for over {} minutes (see <code>etcd-ca check</code>).</p>",
        fleet.stale_after_seconds / 60,
        fleet.mismatch_grace_seconds / 60
    );
    layout("Fleet", "fleet", Some(30), &body)
}

/// The first 16 hex digits of a serial, enough to tell certificates apart at a glance.
fn short(serial: &str) -> String {
    serial.chars().take(16).collect()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn time_left_reads_like_a_person_would() {
        let t = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(time_left(t + time::Duration::hours(49), t), "2d 1h");
        assert_eq!(time_left(t + time::Duration::minutes(125), t), "2h 05m");
        assert_eq!(
            time_left(t - time::Duration::days(3), t),
            "expired 3d 0h ago"
        );
    }
}
