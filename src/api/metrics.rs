//! `GET /metrics`: Prometheus text exposition.
//!
//! Counters (issued, renewed, refused) live in memory since the server started; expiry gauges
//! are read from the store at scrape time, so they are right even after a restart.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use time::OffsetDateTime;

use crate::authority::{Authority, AuthorityError};

/// In-memory counters.
#[derive(Debug, Default)]
pub struct Metrics {
    issued: Mutex<BTreeMap<String, u64>>,
    renewed: Mutex<BTreeMap<String, u64>>,
    refused: Mutex<BTreeMap<(String, String), u64>>,
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    // A poisoned lock only means another thread panicked mid-increment; the counts stay usable.
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry(key).or_default() += 1;
}

use crate::wire::label_value as escape;

impl Metrics {
    pub fn issued(&self, profile: &str) {
        bump(&self.issued, profile.to_string());
    }

    pub fn renewed(&self, profile: &str) {
        bump(&self.renewed, profile.to_string());
    }

    pub fn refused(&self, action: &str, reason: crate::wire::ErrorCode) {
        bump(
            &self.refused,
            (action.to_string(), reason.as_str().to_string()),
        );
    }

    /// The whole exposition.
    /// The Prometheus text. Series naming nodes (`etcd_ca_certificate_expiry_seconds`) only
    /// with `per_node` (an admin scrape): node names are an inventory of the clusters.
    pub async fn render(
        &self,
        authority: &Authority,
        now: OffsetDateTime,
        per_node: bool,
    ) -> Result<String, AuthorityError> {
        let mut out = String::new();
        let counters = [
            (
                "etcd_ca_certificates_issued_total",
                "Certificates issued (enrollment and admin issue), by profile.",
                &self.issued,
            ),
            (
                "etcd_ca_certificates_renewed_total",
                "Certificates renewed over mTLS, by profile.",
                &self.renewed,
            ),
        ];
        for (name, help, map) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let map = map.lock().unwrap_or_else(|e| e.into_inner());
            for (profile, count) in map.iter() {
                let _ = writeln!(out, "{name}{{profile=\"{}\"}} {count}", escape(profile));
            }
        }
        let name = "etcd_ca_requests_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests refused, by action and reason (the API error code).\n# TYPE {name} counter"
        );
        {
            let map = self.refused.lock().unwrap_or_else(|e| e.into_inner());
            for ((action, reason), count) in map.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{action=\"{}\",reason=\"{}\"}} {count}",
                    escape(action),
                    escape(reason)
                );
            }
        }
        let name = "etcd_ca_certificate_expiry_min_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until the first node of a profile is left without a valid certificate.\n# TYPE {name} gauge"
        );
        for (profile, not_after) in authority.soonest_expiry_by_profile(now).await? {
            let _ = writeln!(
                out,
                "{name}{{profile=\"{}\"}} {}",
                escape(&profile),
                (not_after - now).whole_seconds()
            );
        }
        if per_node {
            render_fleet(&mut out, &super::fleet::fleet(authority, now).await?, now);
        }
        let name = "etcd_ca_crl_next_update_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until the CRL etcd's members install must be replaced (its nextUpdate); a member refuses every client once its CRL is unusable.\n# TYPE {name} gauge"
        );
        // A CRL that cannot be built now is no reason to lose every other series.
        let crl = authority.current_crl(now).await.ok();
        if let Some(Ok((_, contents))) = crl.map(|c| crate::pki::crl_contents(&c)) {
            if let Some(next) = contents.next_update {
                let _ = writeln!(out, "{name} {}", (next - now).whole_seconds());
            }
        }
        let name = "etcd_ca_ca_expiry_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until each CA generation's certificate expires.\n# TYPE {name} gauge"
        );
        for g in authority.generations() {
            let _ = writeln!(
                out,
                "{name}{{generation=\"{}\",state=\"{}\"}} {}",
                g.id,
                g.state.as_str(),
                (g.not_after - now).whole_seconds()
            );
        }
        Ok(out)
    }
}

/// The per-node series, from the same fleet the web view and `etcd-ca check` show.
fn render_fleet(out: &mut String, fleet: &crate::wire::Fleet, now: OffsetDateTime) {
    use super::fleet::marks;
    use crate::wire::gauge_family as family;
    let entries = || {
        fleet.nodes.iter().flat_map(|n| {
            n.entries.iter().map(move |e| {
                let labels = format!(
                    "node=\"{}\",profile=\"{}\"",
                    escape(&n.node),
                    escape(&e.profile)
                );
                (n, e, labels)
            })
        })
    };
    let nodes = || {
        fleet
            .nodes
            .iter()
            .map(|n| (n, format!("node=\"{}\"", escape(&n.node))))
    };
    family(
        out,
        "etcd_ca_certificate_expiry_seconds",
        "Seconds until the newest valid certificate issued to a node for a profile expires.",
        entries().filter_map(|(_, e, l)| {
            Some((l, (e.issued.as_ref()?.not_after? - now).whole_seconds()))
        }),
    );
    family(
        out,
        "etcd_ca_served_certificate_expiry_seconds",
        "Seconds until the certificate a member serves for a profile expires (probed by its agent).",
        entries()
            .filter_map(|(_, e, l)| Some((l, (e.served.as_ref()?.not_after? - now).whole_seconds()))),
    );
    family(
        out,
        "etcd_ca_served_certificate_mismatch",
        "1 when a member has served another certificate than the newest issued for longer than the grace period.",
        entries()
            .filter(|(_, e, _)| e.served.is_some())
            .map(|(_, e, l)| (l, i64::from(e.marks.iter().any(|m| m == marks::MISMATCH)))),
    );
    family(
        out,
        "etcd_ca_installed_certificate_revoked",
        "1 when the certificate a node's agent installed for a profile is revoked.",
        entries()
            .filter(|(_, e, _)| e.installed.is_some())
            .map(|(_, e, l)| (l, i64::from(e.marks.iter().any(|m| m == marks::REVOKED)))),
    );
    family(
        out,
        "etcd_ca_agent_last_report_age_seconds",
        "Seconds since a node's agent last reported to the CA.",
        nodes().filter_map(|(n, l)| Some((l, (now - n.reported_at?).whole_seconds()))),
    );
    family(
        out,
        "etcd_ca_agent_last_success_age_seconds",
        "Seconds since a node's agent last completed a pass (enrollment, renewals, bundle and CRL), as it reported.",
        nodes()
            .filter_map(|(n, l)| Some((l, (now - n.agent.as_ref()?.last_success?).whole_seconds()))),
    );
    family(
        out,
        "etcd_ca_agent_renewal_failures",
        "Failed passes of a node's agent since its last success, as it last reported.",
        nodes().filter_map(|(n, l)| Some((l, n.agent.as_ref()?.failures as i64))),
    );
}
