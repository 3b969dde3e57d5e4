//! The fleet: every node the CA knows, with the certificate it was last issued per profile,
//! the one its agent says it installed, the one its member really serves, and the marks an
//! operator acts on (expired, expiring, revoked, stale, failing, mismatch, unreachable). One
//! builder, pure with time passed in, feeds `GET /v1/fleet`, the web view, `etcd-ca check`
//! and the per-node metrics, so they never disagree.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use time::{Duration, OffsetDateTime};

use crate::authority::{Authority, AuthorityError};
use crate::store::{CertificateDates, CurrentCertificate, FleetReport};
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

/// Reads what the fleet is made of and builds it. Only the records a mark depends on are read
/// (an installed certificate that is not the current one, a current one whose member serves
/// another, one with under 7 days left): a healthy fleet costs the small current-certificates
/// table and the reports, not a lookup per certificate.
pub async fn fleet(authority: &Authority, now: OffsetDateTime) -> Result<Fleet, AuthorityError> {
    let current = authority.current_certificates(now).await?;
    let reports = authority.fleet_reports().await?;
    let serials: Vec<String> = needed_records(&current, &reports, now)
        .into_iter()
        .collect();
    let records = authority.certificate_dates(&serials).await?;
    Ok(build(now, &current, &reports, &records))
}

/// The serials whose records [`build`] needs to mark the fleet.
fn needed_records(
    current: &[CurrentCertificate],
    reports: &[FleetReport],
    now: OffsetDateTime,
) -> BTreeSet<String> {
    let by_node: HashMap<(&str, &str), &CurrentCertificate> = current
        .iter()
        .map(|c| ((c.node.as_str(), c.profile.as_str()), c))
        .collect();
    let mut needed: BTreeSet<String> = current
        .iter()
        .filter(|c| c.not_after - now < Duration::days(7))
        .map(|c| c.serial.clone())
        .collect();
    for r in reports {
        let details = ReportDetails::from_json(&r.details);
        for (profile, installed) in &r.certificates {
            let issued = by_node.get(&(r.node.as_str(), profile.as_str()));
            if issued.is_none_or(|c| &c.serial != installed) {
                needed.insert(installed.clone());
            }
            let served = details.served.get(profile).and_then(|s| s.serial.as_ref());
            if let (Some(issued), Some(served)) = (issued, served) {
                if &issued.serial != served {
                    needed.insert(issued.serial.clone());
                }
            }
        }
    }
    needed
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
    reports: &[FleetReport],
    records: &[CertificateDates],
) -> Fleet {
    let by_serial: HashMap<&str, &CertificateDates> =
        records.iter().map(|r| (r.serial.as_str(), r)).collect();
    let mut issued: BTreeMap<&str, BTreeMap<&str, &CurrentCertificate>> = BTreeMap::new();
    for c in current {
        issued.entry(&c.node).or_default().insert(&c.profile, c);
    }
    let reported: BTreeMap<&str, &FleetReport> =
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
                    // The installed certificate is the current one: valid, its expiry known.
                    let installed_current =
                        installed.is_some_and(|s| issued.is_some_and(|c| &c.serial == s));
                    let mut marks = Vec::new();
                    if installed_record.is_some_and(|r| r.revoked_at.is_some()) {
                        marks.push(marks::REVOKED);
                    }
                    // The certificate the node stands on: what it installed, else what it got.
                    // (Its start is read only when under 7 days are left: see needed_records.)
                    let (not_before, not_after) = if let Some(r) = installed_record {
                        (Some(r.not_before), Some(r.not_after))
                    } else if installed.is_none() || installed_current {
                        (
                            issued_record.map(|r| r.not_before),
                            issued.map(|c| c.not_after),
                        )
                    } else {
                        // Installed, but no longer (or never) in the records: unknown.
                        (None, None)
                    };
                    match (not_before, not_after) {
                        (_, Some(end)) if end <= now => marks.push(marks::EXPIRED),
                        (Some(start), Some(end)) if is_expiring(start, end, now) => {
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
                        installed: installed
                            .map(|serial| match installed_record {
                                None if installed_current => FleetCertificate {
                                    serial: serial.clone(),
                                    generation: issued.map(|c| c.ca_generation),
                                    not_after: issued.map(|c| c.not_after),
                                    status: "valid".into(),
                                },
                                Some(r) => FleetCertificate {
                                    serial: serial.clone(),
                                    generation: Some(r.ca_generation),
                                    not_after: Some(r.not_after),
                                    status: match r {
                                        r if r.revoked_at.is_some() => "revoked",
                                        r if r.not_after <= now => "expired",
                                        // Not the newest issued for its node and profile.
                                        _ => "superseded",
                                    }
                                    .into(),
                                },
                                None => FleetCertificate {
                                    serial: serial.clone(),
                                    generation: None,
                                    not_after: None,
                                    status: "unknown".into(),
                                },
                            })
                            .map(Box::new),
                        served: served.map(Box::new),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::wire::{AgentHealth, Served};

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn record(serial: &str, issued: OffsetDateTime, days: i64) -> CertificateDates {
        CertificateDates {
            serial: serial.into(),
            ca_generation: 1,
            not_before: issued,
            not_after: issued + Duration::days(days),
            issued_at: issued,
            revoked_at: None,
        }
    }

    /// `r` as n1's current certificate of `profile`.
    fn current(r: &CertificateDates, profile: &str) -> CurrentCertificate {
        CurrentCertificate {
            node: "n1".into(),
            profile: profile.into(),
            serial: r.serial.clone(),
            not_after: r.not_after,
            ca_generation: r.ca_generation,
        }
    }

    fn report(
        installed: &[(&str, &str)],
        details: ReportDetails,
        at: OffsetDateTime,
    ) -> FleetReport {
        FleetReport {
            node: "n1".into(),
            certificates: installed
                .iter()
                .map(|(p, s)| (p.to_string(), s.to_string()))
                .collect(),
            reported_at: at,
            details: details.to_json(),
        }
    }

    fn served(serial: &str, at: OffsetDateTime) -> Served {
        Served {
            endpoint: "https://127.0.0.1:2379".into(),
            serial: Some(serial.into()),
            not_after: None,
            error: None,
            probed_at: at,
        }
    }

    /// n1's `profile` entry, built from only the records `needed_records` asks for.
    fn entry(
        now: OffsetDateTime,
        current: &[CurrentCertificate],
        reports: &[FleetReport],
        records: &[CertificateDates],
        profile: &str,
    ) -> FleetEntry {
        let needed = needed_records(current, reports, now);
        let read: Vec<CertificateDates> = records
            .iter()
            .filter(|r| needed.contains(&r.serial))
            .cloned()
            .collect();
        let fleet = build(now, current, reports, &read);
        fleet.nodes[0]
            .entries
            .iter()
            .find(|e| e.profile == profile)
            .unwrap()
            .clone()
    }

    fn marks(
        now: OffsetDateTime,
        current: &[CurrentCertificate],
        reports: &[FleetReport],
        records: &[CertificateDates],
        profile: &str,
    ) -> Vec<String> {
        entry(now, current, reports, records, profile).marks
    }

    #[test]
    fn a_healthy_node_reads_no_record_and_has_no_mark() {
        let r = record("0a", t0(), 90);
        let c = [current(&r, "server")];
        let reports = [report(&[("server", "0a")], ReportDetails::default(), t0())];
        assert!(needed_records(&c, &reports, t0()).is_empty());
        let e = entry(t0(), &c, &reports, &[], "server");
        assert!(e.marks.is_empty());
        let installed = e.installed.unwrap();
        assert_eq!(installed.status, "valid");
        assert_eq!(installed.not_after, Some(r.not_after));
    }

    #[test]
    fn expiring_is_under_a_fifth_of_the_lifetime_and_under_a_week() {
        let r = record("0a", t0(), 10);
        let c = [current(&r, "client")];
        let at = |days: i64, hours: i64| t0() + Duration::days(days) + Duration::hours(hours);
        let records = std::slice::from_ref(&r);
        assert!(marks(at(7, 0), &c, &[], records, "client").is_empty());
        assert_eq!(marks(at(8, 1), &c, &[], records, "client"), ["expiring"]);
        // A year-long certificate: only the last week counts.
        let long = record("0b", t0(), 365);
        let c = [current(&long, "server")];
        let records = std::slice::from_ref(&long);
        assert!(marks(at(357, 0), &c, &[], records, "server").is_empty());
        assert_eq!(marks(at(359, 0), &c, &[], records, "server"), ["expiring"]);
    }

    #[test]
    fn a_revoked_installed_certificate_is_marked_and_an_expired_one_too() {
        let mut old = record("0a", t0(), 90);
        old.revoked_at = Some(t0() + Duration::days(1));
        let now = t0() + Duration::days(1);
        let reports = [report(&[("server", "0a")], ReportDetails::default(), now)];
        let records = std::slice::from_ref(&old);
        let e = entry(now, &[], &reports, records, "server");
        assert_eq!(e.marks, ["revoked"]);
        assert_eq!(e.installed.unwrap().status, "revoked");
        let now = t0() + Duration::days(91);
        let fresh = [report(&[("server", "0a")], ReportDetails::default(), now)];
        assert_eq!(
            marks(now, &[], &fresh, records, "server"),
            ["revoked", "expired"]
        );
    }

    #[test]
    fn an_older_certificate_still_installed_is_superseded() {
        let old = record("0a", t0(), 90);
        let new = record("0b", t0() + Duration::days(60), 90);
        let now = t0() + Duration::days(61);
        let reports = [report(&[("server", "0a")], ReportDetails::default(), now)];
        let e = entry(
            now,
            &[current(&new, "server")],
            &reports,
            &[old, new],
            "server",
        );
        assert_eq!(e.installed.unwrap().status, "superseded");
        assert!(e.marks.is_empty());
    }

    #[test]
    fn a_mismatch_counts_only_after_the_grace_period_and_stale_and_failing_reports() {
        let old = record("0a", t0(), 90);
        let new = record("0b", t0() + Duration::days(60), 90);
        let c = [current(&new, "server")];
        let records = [old, new.clone()];
        let probed = |after: Duration| {
            let at = new.issued_at + after;
            let details = ReportDetails {
                agent: Some(AgentHealth {
                    failures: 2,
                    ..Default::default()
                }),
                served: BTreeMap::from([("server".to_string(), served("0a", at))]),
            };
            report(&[("server", "0b")], details, at)
        };
        let early = [probed(Duration::minutes(9))];
        assert_eq!(
            marks(early[0].reported_at, &c, &early, &records, "server"),
            ["failing"]
        );
        let late = [probed(Duration::minutes(11))];
        assert_eq!(
            marks(late[0].reported_at, &c, &late, &records, "server"),
            ["failing", "mismatch"]
        );
        let later = late[0].reported_at + Duration::minutes(31);
        assert_eq!(
            marks(later, &c, &late, &records, "server"),
            ["stale", "failing", "mismatch"]
        );
    }
}
