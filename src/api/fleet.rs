//! The fleet: every node the CA knows, with the certificate it was last issued per profile,
//! the one its agent says it installed, the one its member really serves, and the marks an
//! operator acts on (expired, expiring, revoked, stale, failing, mismatch, unreachable). One
//! builder, pure with time passed in, feeds `GET /v1/fleet`, the web view, `etcd-ca check`
//! and the per-node metrics, so they never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use time::{Duration, OffsetDateTime};

use crate::authority::{Authority, AuthorityError};
use crate::store::{CertificateRecord, CurrentCertificate, NodeReport};
use crate::wire::{Fleet, FleetCertificate, FleetEntry, FleetNode, ReportDetails};

/// How long a member may go on serving another certificate than the newest issued before it
/// is marked: the agent reports right after it installs a renewal, and etcd reads its files at
/// every handshake, so only a member reading other files (or not restarted) lasts this long.
pub const MISMATCH_GRACE: Duration = Duration::minutes(10);

/// An agent that has not reported for this long is marked stale (it reports every
/// `--refresh-interval`, 5 minutes by default, and after every renewal).
pub const STALE_AFTER: Duration = Duration::minutes(30);

/// Marks, as they go on the wire.
pub mod marks {
    pub const EXPIRED: &str = "expired";
    pub const EXPIRING: &str = "expiring";
    pub const REVOKED: &str = "revoked";
    pub const STALE: &str = "stale";
    pub const FAILING: &str = "failing";
    pub const MISMATCH: &str = "mismatch";
    pub const UNREACHABLE: &str = "unreachable";
}

/// Reads what the fleet is made of and builds it.
pub async fn fleet(authority: &Authority, now: OffsetDateTime) -> Result<Fleet, AuthorityError> {
    let current = authority.current_certificates(now).await?;
    let reports = authority.node_reports().await?;
    let mut serials: BTreeSet<String> = current.iter().map(|c| c.serial.clone()).collect();
    for r in &reports {
        serials.extend(r.certificates.values().cloned());
        let details = ReportDetails::from_json(&r.details);
        serials.extend(details.served.values().filter_map(|s| s.serial.clone()));
    }
    let serials: Vec<String> = serials.into_iter().collect();
    let records = authority.certificates_by_serial(&serials, now).await?;
    Ok(build(now, &current, &reports, &records))
}

/// A certificate is expiring when less than a fifth of its lifetime (and under 7 days) is
/// left: an agent renews at about two thirds, so by then it has failed for a while.
pub fn is_expiring(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    let left = not_after - now;
    let lifetime: Duration = not_after - not_before;
    let threshold = std::cmp::min(lifetime / 5_i32, Duration::days(7));
    left > Duration::ZERO && left < threshold
}

/// The fleet from its parts (no I/O).
pub fn build(
    now: OffsetDateTime,
    current: &[CurrentCertificate],
    reports: &[NodeReport],
    records: &[CertificateRecord],
) -> Fleet {
    let by_serial: HashMap<&str, &CertificateRecord> =
        records.iter().map(|r| (r.serial.as_str(), r)).collect();
    let mut issued: BTreeMap<&str, BTreeMap<&str, &CurrentCertificate>> = BTreeMap::new();
    for c in current {
        issued.entry(&c.node).or_default().insert(&c.profile, c);
    }
    let reported: BTreeMap<&str, &NodeReport> =
        reports.iter().map(|r| (r.node.as_str(), r)).collect();
    let names: BTreeSet<&str> = issued.keys().chain(reported.keys()).copied().collect();
    let nodes = names
        .into_iter()
        .map(|name| {
            let report = reported.get(name).copied();
            let details = report.map(|r| ReportDetails::from_json(&r.details));
            let issued_here = issued.get(name);
            let mut profiles: BTreeSet<&str> = BTreeSet::new();
            if let Some(i) = issued_here {
                profiles.extend(i.keys().copied());
            }
            if let Some(r) = report {
                profiles.extend(r.certificates.keys().map(String::as_str));
            }
            let stale = report.is_some_and(|r| now - r.reported_at > STALE_AFTER);
            let failing = details
                .as_ref()
                .and_then(|d| d.agent.as_ref())
                .is_some_and(|a| a.failures > 0);
            let entries = profiles
                .into_iter()
                .map(|profile| {
                    let issued = issued_here.and_then(|i| i.get(profile)).copied();
                    let installed = report.and_then(|r| r.certificates.get(profile));
                    let served = details
                        .as_ref()
                        .and_then(|d| d.served.get(profile))
                        .cloned();
                    let issued_record = issued.and_then(|c| by_serial.get(c.serial.as_str()));
                    let installed_record = installed.and_then(|s| by_serial.get(s.as_str()));
                    let mut marks = Vec::new();
                    // The certificate the node stands on: what it installed, else what it got.
                    let relied = installed_record.or(issued_record);
                    if installed_record.is_some_and(|r| r.revoked_at.is_some()) {
                        marks.push(marks::REVOKED);
                    }
                    match relied {
                        Some(r) if r.not_after <= now => marks.push(marks::EXPIRED),
                        Some(r) if is_expiring(r.not_before, r.not_after, now) => {
                            marks.push(marks::EXPIRING)
                        }
                        _ => {}
                    }
                    if stale {
                        marks.push(marks::STALE);
                    }
                    if failing {
                        marks.push(marks::FAILING);
                    }
                    if let Some(s) = &served {
                        if s.error.is_some() {
                            marks.push(marks::UNREACHABLE);
                        }
                        let newest = issued_record.map(|r| (r.serial.as_str(), r.issued_at));
                        if let (Some(serial), Some((newest, issued_at))) = (&s.serial, newest) {
                            if serial != newest && s.probed_at >= issued_at + MISMATCH_GRACE {
                                marks.push(marks::MISMATCH);
                            }
                        }
                    }
                    FleetEntry {
                        profile: profile.to_string(),
                        issued: issued.map(|c| FleetCertificate {
                            serial: c.serial.clone(),
                            generation: Some(c.ca_generation),
                            not_after: Some(c.not_after),
                            status: "valid".into(),
                        }),
                        installed: installed.map(|serial| match installed_record {
                            Some(r) => FleetCertificate {
                                serial: serial.clone(),
                                generation: Some(r.ca_generation),
                                not_after: Some(r.not_after),
                                status: r.state.as_str().into(),
                            },
                            None => FleetCertificate {
                                serial: serial.clone(),
                                generation: None,
                                not_after: None,
                                status: "unknown".into(),
                            },
                        }),
                        served,
                        marks: marks.into_iter().map(String::from).collect(),
                    }
                })
                .collect();
            FleetNode {
                node: name.to_string(),
                reported_at: report.map(|r| r.reported_at),
                agent: details.and_then(|d| d.agent),
                entries,
            }
        })
        .collect();
    Fleet {
        now,
        mismatch_grace_seconds: MISMATCH_GRACE.whole_seconds(),
        stale_after_seconds: STALE_AFTER.whole_seconds(),
        nodes,
    }
}
