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
            let current = authority.current_certificates(now).await?;
            let name = "etcd_ca_certificate_expiry_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Seconds until the last valid certificate of a node and profile expires.\n# TYPE {name} gauge"
            );
            for c in &current {
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{}\",profile=\"{}\"}} {}",
                    escape(&c.node),
                    escape(&c.profile),
                    (c.not_after - now).whole_seconds()
                );
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
