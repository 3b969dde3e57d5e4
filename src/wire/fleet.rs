//! What agents tell the server beyond their files (how renewals go, what the member serves)
//! and the fleet the server builds from it (`GET /v1/fleet`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// What the server keeps of a report beyond the files (the store holds it as JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportDetails {
    #[serde(default)]
    pub agent: Option<AgentHealth>,
    #[serde(default)]
    pub served: BTreeMap<String, Served>,
}

impl ReportDetails {
    pub fn to_json(&self) -> String {
        // Plain data (strings, numbers, times): serializing it cannot fail.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// What was stored; a report from before details existed (or unreadable) has none.
    pub fn from_json(text: &str) -> Self {
        serde_json::from_str(text).unwrap_or_default()
    }
}

/// The agent's own account of its renewals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentHealth {
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_renewal: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    /// The last failure, while it is the latest outcome.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Failed passes since the last success.
    #[serde(default)]
    pub failures: u64,
}

/// The certificate a member served when probed, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Served {
    /// The URL probed (`https://10.0.0.1:2379`).
    pub endpoint: String,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub probed_at: OffsetDateTime,
}

/// `GET /v1/fleet`: every node the CA knows, with what it was issued, what its agent installed
/// and what its member serves, and the marks the fleet view and `etcd-ca check` act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    #[serde(with = "time::serde::rfc3339")]
    pub now: OffsetDateTime,
    /// How long a member may keep serving an older certificate than the newest issued.
    pub mismatch_grace_seconds: i64,
    /// How long an agent may stay silent before it is marked stale.
    pub stale_after_seconds: i64,
    pub nodes: Vec<FleetNode>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetNode {
    pub node: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub reported_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub agent: Option<AgentHealth>,
    pub entries: Vec<FleetEntry>,
}

/// One node and profile. What only a reporting agent tells (installed, served) is boxed: a
/// fleet of 10,000 nodes holds 30,000 entries, most of them without one or both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetEntry {
    pub profile: String,
    /// The newest valid certificate issued for it.
    #[serde(default)]
    pub issued: Option<FleetCertificate>,
    /// What the agent last said it installed, with its state in the CA's records.
    #[serde(default)]
    pub installed: Option<Box<FleetCertificate>>,
    #[serde(default)]
    pub served: Option<Box<Served>>,
    /// `expired`, `expiring`, `revoked`, `stale`, `mismatch`, `failing`, `unprobed`.
    pub marks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetCertificate {
    pub serial: String,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    /// `valid`, `revoked`, `expired`, or `unknown` (not in the CA's records, or removed).
    pub status: String,
}
