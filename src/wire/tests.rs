//! Every wire type survives a round trip (what one side writes, the other reads back equal),
//! unknown fields are refused, and every error code is unique and listed in the README.

use super::*;
use serde::de::DeserializeOwned;

/// Serialises, deserialises and compares: what one side writes, the other reads back equal.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: T) {
    let text = serde_json::to_string(&value).unwrap();
    let back: T = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(back, value, "{text}");
}

fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

fn agent_health() -> AgentHealth {
    AgentHealth {
        next_renewal: Some(at(40)),
        last_success: Some(at(-3)),
        last_error: Some("refused".into()),
        failures: 2,
    }
}

fn served() -> Served {
    Served {
        endpoint: "https://127.0.0.1:2379".into(),
        serial: Some("0b".into()),
        not_after: Some(at(30)),
        error: None,
        probed_at: at(-1),
    }
}

fn certificate() -> Certificate {
    Certificate {
        serial: "0a1b".into(),
        profile: "server".into(),
        node: "n1".into(),
        common_name: "n1".into(),
        sans: vec!["IP:10.0.0.11".into(), "DNS:n1.etcd.internal".into()],
        not_before: at(0),
        not_after: at(86400),
        certificate_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
    }
}

#[test]
fn every_wire_type_reads_back_what_it_writes() {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let map = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    round_trip(ErrorBody {
        code: "token_used".into(),
        message: "used".into(),
    });
    round_trip(certificate());
    round_trip(Enrollment {
        node: "n1".into(),
        certificates: [("server".to_string(), certificate())].into(),
        trust_bundle: "pem".into(),
        replayed: true,
    });
    round_trip(CertificateInfo {
        serial: "0a".into(),
        ca_generation: 2,
        profile: "client".into(),
        node: "ops".into(),
        subject: "CN=ops".into(),
        common_name: "ops".into(),
        sans: vec![],
        key_type: "ecdsa-p256".into(),
        not_before: at(0),
        not_after: at(10),
        status: "revoked".into(),
        revoked_at: Some(at(5)),
        revocation_reason: Some("keyCompromise".into()),
        issued_at: at(1),
        renewed_from: Some("09".into()),
        pem: "pem".into(),
    });
    round_trip(TidyBody { dry_run: true });
    round_trip(TidyAnswer {
        dry_run: false,
        certificates: 3,
        tokens: 2,
        audit_events: 1,
        certificates_expired_before: at(1),
        tokens_before: at(2),
        audit_events_before: at(3),
    });
    round_trip(CertificatePage {
        certificates: vec![],
        next: Some("10.0a".into()),
    });
    round_trip(AuditEntry {
        at: at(3),
        actor: "admin:ab12".into(),
        action: "revoke".into(),
        node: Some("ops".into()),
        serial: None,
        detail: "keyCompromise".into(),
    });
    round_trip(AdminTokenRevoked {
        id: "ab12".into(),
        revoked: true,
    });
    round_trip(Health {
        status: "ok".into(),
        ca_fingerprint: "sha256:00".into(),
    });
    round_trip(CrlQuery {
        generation: Some(2),
        ca: None,
    });
    round_trip(WatchQuery {
        version: Some("v".into()),
        wait: Some("25s".into()),
    });
    round_trip(WatchAnswer {
        version: "v2".into(),
    });
    round_trip(EnrollBody {
        token: "etcdca_x".into(),
        node: Some("n1".into()),
        csrs: map(&[("server", "csr"), ("peer", "csr2")]),
    });
    round_trip(RenewBody {
        csr: Some("csr".into()),
    });
    round_trip(RenewNodeBody {
        serials: strings(&["0a", "0b"]),
    });
    round_trip(RenewedNode {
        certificates: vec![certificate()],
    });
    round_trip(SignBody {
        profile: "server".into(),
        node: "n1".into(),
        csr: "csr".into(),
        ips: Some(strings(&["10.0.0.1"])),
        dns_names: None,
        common_name: Some("n1".into()),
    });
    round_trip(TokenBody {
        node: "n1".into(),
        ips: strings(&["10.0.0.1"]),
        dns_names: strings(&["n1.example"]),
        profiles: strings(&["server", "peer"]),
        common_name: None,
        ttl: Some("30m".into()),
        allow_root: false,
    });
    round_trip(TokenResponse {
        token: "etcdca_x".into(),
        id: "x".into(),
        expires_at: Some(at(1800)),
        node: Some("n1".into()),
        profiles: strings(&["server"]),
        ca_fingerprint: "sha256:00".into(),
    });
    round_trip(CertsQuery {
        node: Some("n1".into()),
        profile: None,
        status: Some("superseded".into()),
        expiring_within: Some("30d".into()),
        limit: Some(50),
        after: Some("1767225600.0a".into()),
    });
    round_trip(RevokeBody {
        reason: Some("superseded".into()),
    });
    round_trip(IssueBody {
        profile: "client".into(),
        node: "ops".into(),
        ips: vec![],
        dns_names: vec![],
        common_name: Some("ops".into()),
        lifetime: Some("1y".into()),
        key_type: Some("ed25519".into()),
        allow_root: true,
    });
    round_trip(IssueResponse {
        certificate: certificate(),
        private_key_pem: "key".into(),
        trust_bundle: "bundle".into(),
    });
    round_trip(AuditQuery { limit: Some(10) });
    round_trip(ReportBody {
        installed_bundle: strings(&["sha256:01"]),
        running_bundle: strings(&["sha256:01", "sha256:02"]),
        certificates: map(&[("server", "0a")]),
        agent: Some(agent_health()),
        served: [("server".to_string(), served())].into(),
    });
    round_trip(ReportDetails {
        agent: Some(agent_health()),
        served: [("peer".to_string(), served())].into(),
    });
    assert_eq!(ReportDetails::from_json("{}"), ReportDetails::default());
    assert_eq!(
        ReportDetails::from_json("not json"),
        ReportDetails::default()
    );
    let fleet_certificate = FleetCertificate {
        serial: "0a".into(),
        generation: Some(2),
        not_after: Some(at(90)),
        status: "valid".into(),
    };
    round_trip(Fleet {
        now: at(0),
        mismatch_grace_seconds: 600,
        stale_after_seconds: 900,
        nodes: vec![FleetNode {
            node: "n1".into(),
            reported_at: Some(at(-5)),
            agent: Some(agent_health()),
            entries: vec![FleetEntry {
                profile: "server".into(),
                issued: Some(fleet_certificate.clone()),
                installed: Some(Box::new(fleet_certificate)),
                served: Some(Box::new(served())),
                marks: strings(&["mismatch"]),
            }],
        }],
    });
    round_trip(Lease {
        node: "n2".into(),
        expires_at: at(60),
    });
    round_trip(RotateBody {
        force: true,
        key_type: Some("ecdsa-p384".into()),
    });
    let generation = RotationGeneration {
        id: 2,
        fingerprint: "sha256:02".into(),
        not_after: at(1000),
    };
    round_trip(RotationStatus {
        phase: "started".into(),
        active: generation.clone(),
        other: Some(generation),
        nodes: vec![RotationNode {
            node: "n1".into(),
            member: true,
            installed_bundle: Some(vec![1, 2]),
            running_bundle: None,
            certificates: [("server".to_string(), 1)].into(),
            reported_at: Some(at(5)),
            stale: false,
            waiting_for: Some("restart".into()),
        }],
        next_step: Some("activate".into()),
        blocked_by: strings(&["n1"]),
        restart_lease: Some(("n1".into(), "2027-01-15T08:00:00Z".into())),
        last_step: Some(RotationStep {
            step: "start".into(),
            at: at(4),
            outcome: "generation 2 introduced".into(),
        }),
    });
    round_trip(AdminTokenInfo {
        id: "ab12".into(),
        created_by: "root@ca".into(),
        created_at: at(0),
        expires_at: None,
        revoked_at: Some(at(9)),
    });
}

#[test]
fn every_error_code_reads_back_and_is_unique() {
    let mut seen = std::collections::HashSet::new();
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
        assert!(seen.insert(code.as_str()), "{code} twice");
    }
    assert_eq!(ErrorCode::parse("no_such_code"), None);
}

#[test]
fn the_readme_lists_every_error_code() {
    let readme = include_str!("../../README.md");
    for code in ErrorCode::ALL {
        assert!(
            readme.contains(&format!("`{code}`")),
            "README.md does not list the error code {code}"
        );
    }
}

#[test]
fn request_bodies_refuse_unknown_fields() {
    let err = serde_json::from_str::<RevokeBody>(r#"{"reasn": "superseded"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}
