//! What the agent tells about itself: the report it sends the CA (what is installed, what the
//! member really serves, how renewals go) and the node_exporter textfile (`--textfile-dir`)
//! that keeps its certificates' expiry visible when the CA is down.

use super::*;
use crate::client::probe;
use crate::wire::{label_value as escape, AgentHealth, Served};

/// How long one probe of the member may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The textfile node_exporter's textfile collector reads for this node.
pub fn textfile_name(node: &str) -> String {
    format!("etcd-ca-agent-{node}.prom")
}

impl Agent {
    /// The endpoint serving each profile's certificate: `server` on the client port,
    /// `peer` on the peer port.
    fn probed_endpoints(&self) -> Vec<(&'static str, &str)> {
        let s = &self.settings;
        [
            ("server", s.etcd_endpoint.as_deref()),
            ("peer", s.etcd_peer_endpoint.as_deref()),
        ]
        .into_iter()
        .filter(|(profile, _)| s.profiles.iter().any(|p| p == profile))
        .filter_map(|(profile, endpoint)| Some((profile, endpoint?)))
        .collect()
    }

    /// What the member serves on each probed port, presenting this node's own certificate of
    /// that profile (the port may require a client certificate).
    pub(super) async fn probe_member(&self) -> BTreeMap<String, Served> {
        let mut served = BTreeMap::new();
        for (profile, endpoint) in self.probed_endpoints() {
            let identity = load_installed(&self.settings.dir, profile).map(|i| identity(&i));
            let answer = probe::served_chain(endpoint, identity, PROBE_TIMEOUT).await;
            let entry = match answer {
                Ok(chain) => match pki::CertSummary::from_der(&chain.leaf) {
                    Ok(summary) => Served {
                        endpoint: endpoint.to_string(),
                        serial: Some(summary.serial),
                        not_after: Some(summary.not_after),
                        error: None,
                        probed_at: now(),
                    },
                    Err(e) => unread(endpoint, format!("unreadable certificate: {e}")),
                },
                Err(e) => unread(endpoint, e.to_string()),
            };
            if let Some(e) = &entry.error {
                tracing::warn!(profile, endpoint, error = %e, "cannot read what the member serves");
            }
            let installed = load_installed(&self.settings.dir, profile).map(|i| i.serial);
            if let (Some(served), Some(installed)) = (&entry.serial, installed) {
                if *served != installed {
                    tracing::warn!(
                        profile, endpoint, served = %served, installed = %installed,
                        "the member serves another certificate than the one installed: does etcd read the files in --dir?"
                    );
                }
            }
            served.insert(profile.to_string(), entry);
        }
        served
    }

    /// The agent's account of its renewals, for the report.
    pub(super) fn health(&self) -> AgentHealth {
        let parse = |t: &Option<String>| {
            t.as_deref().and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
        };
        AgentHealth {
            next_renewal: self.next_renewal(),
            last_success: parse(&self.state.last_success),
            last_error: self.state.last_error.clone(),
            failures: self.failures,
        }
    }

    /// The earliest renewal due among the installed certificates.
    fn next_renewal(&self) -> Option<OffsetDateTime> {
        self.settings
            .profiles
            .iter()
            .filter_map(|p| load_installed(&self.settings.dir, p))
            .map(|i| renewal_due_at(i.validity, &i.serial))
            .min()
    }

    /// Writes the textfile for node_exporter, if asked to (`--textfile-dir`). It reads only
    /// the files on disk and the agent's state, so it is right while the CA is down.
    pub(super) fn write_textfile(&self) {
        let Some(dir) = &self.settings.textfile_dir else {
            return;
        };
        let node = self.settings.node.as_str();
        let text = textfile(node, &self.installed_summaries(), &self.health());
        let path = dir.join(textfile_name(node));
        if let Err(e) = fsutil::write_atomic(&path, text.as_bytes(), fsutil::PUBLIC) {
            tracing::warn!(error = %e, "cannot write the metrics textfile");
        }
    }

    /// Each installed certificate's profile, serial, expiry and renewal time.
    fn installed_summaries(&self) -> Vec<(String, String, OffsetDateTime, OffsetDateTime)> {
        self.settings
            .profiles
            .iter()
            .filter_map(|p| {
                let i = load_installed(&self.settings.dir, p)?;
                let due = renewal_due_at(i.validity, &i.serial);
                Some((p.clone(), i.serial.clone(), i.validity.not_after, due))
            })
            .collect()
    }
}

fn unread(endpoint: &str, error: String) -> Served {
    Served {
        endpoint: endpoint.to_string(),
        serial: None,
        not_after: None,
        error: Some(error),
        probed_at: now(),
    }
}

/// The textfile's content: Prometheus text exposition, one gauge family each.
fn textfile(
    node: &str,
    installed: &[(String, String, OffsetDateTime, OffsetDateTime)],
    health: &AgentHealth,
) -> String {
    let mut out = String::new();
    let node = escape(node);
    let mut family = |name: &str, help: &str, samples: Vec<(String, i64)>| {
        crate::wire::gauge_family(&mut out, name, help, samples)
    };
    family(
        "etcd_ca_agent_certificate_not_after_timestamp_seconds",
        "When the certificate installed for a profile expires (Unix time).",
        installed
            .iter()
            .map(|(profile, serial, not_after, _)| {
                (
                    format!(
                        "node=\"{node}\",profile=\"{}\",serial=\"{}\"",
                        escape(profile),
                        escape(serial)
                    ),
                    not_after.unix_timestamp(),
                )
            })
            .collect(),
    );
    family(
        "etcd_ca_agent_renewal_due_timestamp_seconds",
        "When the agent renews the certificate installed for a profile (Unix time).",
        installed
            .iter()
            .map(|(profile, _, _, due)| {
                (
                    format!("node=\"{node}\",profile=\"{}\"", escape(profile)),
                    due.unix_timestamp(),
                )
            })
            .collect(),
    );
    family(
        "etcd_ca_agent_last_success_timestamp_seconds",
        "When the agent last completed a pass (Unix time; 0: never).",
        vec![(
            format!("node=\"{node}\""),
            health.last_success.map_or(0, |t| t.unix_timestamp()),
        )],
    );
    family(
        "etcd_ca_agent_failures",
        "Failed passes of the agent since its last success.",
        vec![(format!("node=\"{node}\""), health.failures as i64)],
    );
    out
}
