//! `etcd-ca check`: from the admin's host, what every member really serves, judged against
//! what the CA issued: the served serial is the newest issued, its SANs cover the address it
//! was reached at, it chains to the trust bundle (during a rotation, to either CA), it is not
//! revoked or expiring; and the CRL the members install parses, is signed by a trusted CA and
//! is fresh. The endpoints are the ones each node's agent probes (`--etcd-endpoint`,
//! `--etcd-peer-endpoint`). Exit status 1 on any failure.

use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use super::*;
use crate::cli::common::{DataDirArg, RemoteArgs};
use crate::cli::target::Target;
use crate::client::probe;
use crate::duration::{rfc3339, HumanDuration};
use crate::pki;
use crate::wire::{Fleet, FleetEntry, FleetNode};

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// How long to wait for each member's handshake.
    #[arg(long, default_value = "5s")]
    pub timeout: HumanDuration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `check` found; `--json` prints it as is.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub ok: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub checked_at: OffsetDateTime,
    pub crl: CrlCheck,
    pub members: Vec<MemberCheck>,
}

#[derive(Debug, Serialize)]
pub struct CrlCheck {
    pub number: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_update: Option<OffsetDateTime>,
    pub revoked: usize,
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct MemberCheck {
    pub node: String,
    pub profile: String,
    pub endpoint: Option<String>,
    pub issued_serial: Option<String>,
    pub served_serial: Option<String>,
    pub problems: Vec<String>,
    /// Why the member was not probed from here (no endpoint reported by its agent).
    pub unprobed: Option<String>,
}

pub(super) async fn check(args: CheckArgs, now: OffsetDateTime) -> Result<ExitCode, CliError> {
    if args.timeout.as_std().is_zero() {
        return Err(CliError::Usage(
            "--timeout must be longer than 0s (a member's handshake takes time)".into(),
        ));
    }
    let (fleet, bundle_pem, crl) = Target::admin(&args.data_dir, &args.remote)
        .await?
        .run(async |t| {
            Ok((
                t.fleet(now).await?,
                t.trust_bundle().await?,
                t.crl(now).await?,
            ))
        })
        .await?;
    let bundle = pki::pem_certificates(&bundle_pem)
        .map_err(|e| CliError::Failed(format!("the trust bundle is unreadable: {e}")))?;
    let (crl_check, revoked) = check_crl(&crl, &bundle, now);
    let mut members = Vec::new();
    for (node, entry) in members_of(&fleet) {
        members
            .push(check_member(node, entry, &bundle, &revoked, args.timeout.as_std(), now).await);
    }
    let ok = crl_check.problems.is_empty() && members.iter().all(|m| m.problems.is_empty());
    let report = CheckReport {
        ok,
        checked_at: now,
        crl: crl_check,
        members,
    };
    let mut out = stdout();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", render(&report))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every node and profile the fleet holds, but the CA servers' own certificates.
fn members_of(fleet: &Fleet) -> impl Iterator<Item = (&FleetNode, &FleetEntry)> {
    fleet
        .nodes
        .iter()
        .filter(|n| n.node != crate::authority::SERVER_NODE)
        .flat_map(|n| n.entries.iter().map(move |e| (n, e)))
}

/// The CRL's own checks, and the serials it lists.
fn check_crl(
    der: &[u8],
    bundle: &[Vec<u8>],
    now: OffsetDateTime,
) -> (CrlCheck, std::collections::BTreeSet<String>) {
    let mut problems = Vec::new();
    let contents = match pki::crl_contents(der) {
        Ok((_, c)) => Some(c),
        Err(e) => {
            problems.push(format!(
                "the CRL does not parse: {e} (etcd refuses every client)"
            ));
            None
        }
    };
    if contents.is_some() && !bundle.iter().any(|ca| pki::crl_issued_by(der, ca)) {
        problems.push("the CRL is not signed by a CA in the trust bundle".into());
    }
    let next_update = contents.as_ref().and_then(|c| c.next_update);
    match next_update {
        Some(next) if next <= now => problems.push(format!(
            "the CRL is stale: its next update was {}",
            rfc3339(next)
        )),
        None if contents.is_some() => problems.push("the CRL has no next update".into()),
        _ => {}
    }
    let revoked = contents
        .as_ref()
        .map(|c| c.revoked.iter().map(|(s, _, _)| s.clone()).collect())
        .unwrap_or_default();
    let check = CrlCheck {
        number: contents.as_ref().and_then(|c| c.number),
        next_update,
        revoked: contents.map_or(0, |c| c.revoked.len()),
        problems,
    };
    (check, revoked)
}

/// One member's port: the fleet's marks, then what it serves when reached from here.
async fn check_member(
    node: &FleetNode,
    entry: &FleetEntry,
    bundle: &[Vec<u8>],
    revoked: &std::collections::BTreeSet<String>,
    timeout: Duration,
    now: OffsetDateTime,
) -> MemberCheck {
    let issued_serial = entry.issued.as_ref().map(|c| c.serial.clone());
    let mut problems: Vec<String> = entry
        .marks
        .iter()
        .filter(|m| m.as_str() != crate::api::fleet::marks::MISMATCH)
        .map(|m| mark_text(m, node, entry, now))
        .collect();
    let endpoint = entry.served.as_ref().map(|s| s.endpoint.clone());
    let mut check = MemberCheck {
        node: node.node.clone(),
        profile: entry.profile.clone(),
        endpoint: endpoint.clone(),
        issued_serial: issued_serial.clone(),
        served_serial: None,
        problems: Vec::new(),
        unprobed: None,
    };
    let Some(endpoint) = endpoint else {
        if matches!(entry.profile.as_str(), "server" | "peer") {
            check.unprobed = Some(
                "its agent reports no endpoint (run it with --etcd-endpoint and --etcd-peer-endpoint)"
                    .into(),
            );
        }
        check.problems = problems;
        return check;
    };
    match probe::served_chain(&endpoint, None, timeout).await {
        Err(e) => problems.push(e.to_string()),
        Ok(chain) => {
            // A revoked certificate the fleet already marked installed is not said twice.
            let marked_revoked = entry
                .marks
                .iter()
                .any(|m| m == crate::api::fleet::marks::REVOKED)
                .then(|| entry.installed.as_ref().map(|c| c.serial.as_str()))
                .flatten();
            problems.extend(judge_served(
                &chain.leaf,
                &endpoint,
                issued_serial.as_deref(),
                bundle,
                (revoked, marked_revoked),
                now,
                &mut check,
            ));
        }
    }
    check.problems = problems;
    check
}

/// What is wrong with the certificate a member served at `endpoint`.
fn judge_served(
    leaf: &[u8],
    endpoint: &str,
    issued_serial: Option<&str>,
    bundle: &[Vec<u8>],
    (revoked, marked_revoked): (&std::collections::BTreeSet<String>, Option<&str>),
    now: OffsetDateTime,
    check: &mut MemberCheck,
) -> Vec<String> {
    let mut problems = Vec::new();
    let cert = match pki::parse_certificate(leaf) {
        Ok(c) => c,
        Err(e) => return vec![format!("serves an unreadable certificate: {e}")],
    };
    let serial = pki::serial_hex(&cert);
    check.served_serial = Some(serial.clone());
    match issued_serial {
        Some(issued) if issued != serial => problems.push(format!(
            "serves certificate {serial}, but {issued} is the newest issued (does etcd read the files the agent renews?)"
        )),
        None => problems.push(format!("serves certificate {serial}; the CA issued none valid for it")),
        _ => {}
    }
    if revoked.contains(&serial) && marked_revoked != Some(serial.as_str()) {
        problems.push(format!("serves certificate {serial}, which is revoked"));
    }
    let not_after = cert.validity().not_after.to_datetime();
    if not_after <= now {
        problems.push(format!(
            "serves a certificate that expired at {}",
            rfc3339(not_after)
        ));
    }
    if !bundle.iter().any(|ca| pki::is_issued_by(&cert, ca)) {
        problems.push("serves a certificate no CA in the trust bundle signed".into());
    }
    let sans = pki::certificate_sans(&cert);
    if let Some(host) = endpoint_host(endpoint) {
        let wanted = match host.parse::<IpAddr>() {
            Ok(ip) => format!("IP:{ip}"),
            Err(_) => format!("DNS:{host}"),
        };
        if !sans.contains(&wanted) {
            problems.push(format!(
                "its certificate does not name {host}, the address it was reached at (SANs: {})",
                sans.join(", ")
            ));
        }
    }
    problems
}

/// The host of `https://host:port` (brackets of an IPv6 address removed).
fn endpoint_host(endpoint: &str) -> Option<String> {
    let uri: hyper::Uri = endpoint.parse().ok()?;
    Some(
        uri.host()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
    )
}

/// A fleet mark in words.
fn mark_text(mark: &str, node: &FleetNode, entry: &FleetEntry, now: OffsetDateTime) -> String {
    use crate::api::fleet::marks;
    let installed = entry.installed.as_ref().map_or("-", |c| c.serial.as_str());
    let agent = node.agent.as_ref();
    match mark {
        marks::EXPIRED => format!("certificate {installed} has expired"),
        marks::EXPIRING => format!("certificate {installed} expires soon and was not renewed"),
        marks::REVOKED => format!("the installed certificate {installed} is revoked"),
        marks::STALE => match node.reported_at {
            Some(at) => format!(
                "its agent last reported {} ago",
                humantime::format_duration(std::time::Duration::from_secs(
                    (now - at).whole_minutes().max(0) as u64 * 60
                ))
            ),
            None => "its agent never reported".into(),
        },
        marks::FAILING => format!(
            "its agent failed its last {} passes{}",
            agent.map_or(0, |a| a.failures),
            agent
                .and_then(|a| a.last_error.as_deref())
                .map_or(String::new(), |e| format!(" ({e})"))
        ),
        marks::UNREACHABLE => "its agent cannot read what the member serves".into(),
        other => other.to_string(),
    }
}

/// The text form: one line per member and port, then the CRL, then the verdict.
fn render(report: &CheckReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let short = |s: &Option<String>| {
        s.as_deref()
            .map_or("-".to_string(), |s| s.chars().take(16).collect())
    };
    let rows: Vec<[String; 6]> = report
        .members
        .iter()
        .map(|m| {
            let result = match (&m.unprobed, m.problems.as_slice()) {
                (_, [first, rest @ ..]) => {
                    let mut text = format!("FAIL: {first}");
                    for p in rest {
                        let _ = write!(text, "; {p}");
                    }
                    text
                }
                (Some(why), []) => format!("not probed: {why}"),
                (None, []) => "ok".into(),
            };
            [
                m.node.clone(),
                m.profile.clone(),
                m.endpoint.clone().unwrap_or_else(|| "-".into()),
                short(&m.served_serial),
                short(&m.issued_serial),
                result,
            ]
        })
        .collect();
    let header = ["NODE", "PROFILE", "ENDPOINT", "SERVED", "ISSUED", "RESULT"].map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(out, "{cell:<width$}  ");
        }
        let _ = writeln!(out, "{}", row[5]);
    }
    let crl = &report.crl;
    let crl_result = match crl.problems.as_slice() {
        [] => "ok".to_string(),
        problems => format!("FAIL: {}", problems.join("; ")),
    };
    let _ = writeln!(
        out,
        "CRL: number {}, {} revoked, next update {}: {crl_result}",
        crl.number.map_or("-".into(), |n| n.to_string()),
        crl.revoked,
        crl.next_update.map_or("-".into(), rfc3339),
    );
    let failures = report
        .members
        .iter()
        .filter(|m| !m.problems.is_empty())
        .count()
        + usize::from(!crl.problems.is_empty());
    let probed = report
        .members
        .iter()
        .filter(|m| m.served_serial.is_some())
        .count();
    let _ = writeln!(
        out,
        "{} certificates checked, {} probed from here: {}",
        report.members.len(),
        probed,
        if failures == 0 {
            "all ok".to_string()
        } else {
            format!("{failures} failing")
        }
    );
    out
}
