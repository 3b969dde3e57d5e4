//! The fleet page: every node and profile with what it was issued, installed and serves, its
//! marks, sorted by time left or node, filtered by name or mark, at most [`FLEET_ROWS`] rows
//! unless more are asked for. Rows carry `data-` attributes (node, profile, marks, seconds
//! left) that tests and scripts can rely on.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;

use super::html::{esc, internal, layout, short, time_left, when};
use super::{page_response, UiAdmin};
use crate::api::fleet::{self, marks};
use crate::api::AppState;
use crate::clock::now;
use crate::wire::{Fleet, FleetEntry};

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
                    "<a href=\"/ui/audit?serial={full}\" title=\"{full}\"><code>{}</code></a> ({})",
                    esc(&short(&c.serial)),
                    esc(&c.status),
                    full = esc(&c.serial)
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
            // A revoked certificate never reaches its expiry: say so instead of a countdown.
            left = match not_after {
                _ if e.marks.iter().any(|m| m == marks::REVOKED) => "revoked".into(),
                Some(t) => esc(&time_left(t, now)),
                None => "-".into(),
            },
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
        let known = [
            marks::EXPIRED,
            marks::EXPIRING,
            marks::REVOKED,
            marks::STALE,
            marks::FAILING,
            marks::MISMATCH,
            marks::UNREACHABLE,
        ];
        if mark.is_empty() || mark == "any" || known.contains(&mark) {
            body.push_str("<p class=\"quiet\">No certificates match.</p>");
        } else {
            let _ = write!(
                body,
                "<p class=\"error\">There is no mark {}; the marks are {}.</p>",
                esc(mark),
                known.join(", ")
            );
        }
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
