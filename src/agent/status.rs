//! What the agent tells an operator: `agent status` from the files alone, and the systemd
//! unit `--print-unit` writes.

use super::*;

/// `etcd-ca agent status`: each file's subject, serial, expiry and next renewal, and the state.
pub fn status_report(dir: &Path, now: OffsetDateTime) -> Result<String, AgentError> {
    use std::fmt::Write;
    let mut out = String::new();
    let state: Option<AgentState> = std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(s) = &state {
        let _ = writeln!(
            out,
            "node {} (server {}, enrolled pinning CA {})",
            s.node, s.server, s.ca_fingerprint
        );
        let _ = writeln!(
            out,
            "  last success: {}",
            s.last_success.as_deref().unwrap_or("never")
        );
        if let Some(e) = &s.last_error {
            let _ = writeln!(out, "  last error:   {e}");
        }
        let _ = writeln!(out, "  renewals:     {}", s.renewals);
    }
    // What the agent trusts now: the bundle it installed (it pins those CAs, and those they
    // endorse in a rotation), not the fingerprint it was first given.
    let trusted = bundle_fingerprints(dir);
    if !trusted.is_empty() {
        let _ = writeln!(
            out,
            "  trusts:       {} ({})",
            trusted.join(", "),
            files::CA_BUNDLE
        );
    }
    let revoked = super::enroll::revoked_in(dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| FsError::new("read", dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".crt"))
        .collect();
    names.sort();
    if names.is_empty() {
        let _ = writeln!(out, "no certificates in {}", dir.display());
    }
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| FsError::new("read", &path, e))?;
        for der in pki::pem_certificates(&text)? {
            let s = pki::CertSummary::from_der(&der)?;
            let _ = writeln!(out, "{}", path.display());
            let _ = writeln!(out, "  subject:      {}", s.subject);
            let _ = writeln!(out, "  serial:       {}", s.serial);
            let _ = writeln!(
                out,
                "  not after:    {} ({} days left)",
                rfc3339(s.not_after),
                s.days_left(now)
            );
            if !s.is_ca {
                let validity = Validity {
                    not_before: s.not_before,
                    not_after: s.not_after,
                };
                let due = renewal_due_at(validity, &s.serial);
                let jitter = schedule::jitter_from(s.serial.as_bytes());
                let state = match schedule::urgency(validity, jitter, now) {
                    _ if revoked.contains(s.serial.trim_start_matches('0')) => {
                        "REVOKED (listed in ca.crl): needs a new token"
                    }
                    Urgency::Calm => "ok",
                    Urgency::Due => "renewal due",
                    Urgency::Critical => "RENEWAL OVERDUE, EXPIRES SOON",
                    Urgency::Expired => "EXPIRED: needs a new token",
                };
                let _ = writeln!(out, "  next renewal: {} ({state})", rfc3339(due));
            }
        }
    }
    let crl = dir.join(files::CRL);
    match std::fs::read(&crl) {
        Ok(der) => {
            let verdict = match pki::check_crl_der(&der) {
                Ok(()) => "valid".to_string(),
                Err(e) => format!("INVALID: {e}"),
            };
            let _ = writeln!(out, "{}: {verdict}", crl.display());
        }
        Err(_) => {
            let _ = writeln!(
                out,
                "{}: missing (etcd refuses every client without it)",
                crl.display()
            );
        }
    }
    Ok(out)
}

/// A systemd unit running the agent with these settings.
pub fn systemd_unit(exe: &Path, args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains([' ', '"', '\'', '$']) {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                a.clone()
            }
        })
        .collect();
    format!(
        "[Unit]
Description=etcd-ca renewal agent: enrolls this etcd member and renews its certificates
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={} agent {}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=10s

[Install]
WantedBy=multi-user.target
",
        exe.display(),
        quoted.join(" ")
    )
}
