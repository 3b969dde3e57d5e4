//! Tests of policy decisions and of policy file errors.

use super::*;
use time::macros::datetime;

const NOW: OffsetDateTime = datetime!(2026-11-22 12:00 UTC);
const CA_NOT_AFTER: OffsetDateTime = datetime!(2036-11-22 12:00 UTC);

fn policy() -> Policy {
    Policy::parse(DEFAULT_POLICY, Path::new("policies/etcd.toml")).unwrap()
}

fn node() -> NodeIdentity {
    NodeIdentity::new(
        "n1".parse().unwrap(),
        vec!["10.0.0.11".parse().unwrap()],
        vec!["n1.etcd.internal".parse().unwrap()],
    )
}

fn request<'a>(profile: &'a str, node: &'a NodeIdentity) -> Request<'a> {
    Request {
        profile,
        node,
        common_name: None,
        requested_sans: &[],
        lifetime: None,
        key_type: KeyType::EcdsaP256,
        allow_privileged_common_name: false,
    }
}

fn sans(grant: &Grant) -> Vec<String> {
    grant.sans().iter().map(|s| s.to_string()).collect()
}

#[test]
fn server_certificates_carry_node_names_and_local_names_with_both_ekus() {
    let node = node();
    let grant = policy()
        .evaluate(&request("server", &node), NOW, CA_NOT_AFTER)
        .unwrap();
    assert_eq!(
        sans(&grant),
        [
            "DNS:n1.etcd.internal",
            "IP:10.0.0.11",
            "DNS:localhost",
            "IP:127.0.0.1",
            "IP:::1"
        ]
    );
    assert_eq!(
        grant.extended_key_usages(),
        [ExtendedKeyUsage::ServerAuth, ExtendedKeyUsage::ClientAuth]
    );
    assert_eq!(grant.common_name(), "etcd-server:n1");
    assert_eq!(grant.key_usages(), [KeyUsage::DigitalSignature]);
}

#[test]
fn peer_certificates_carry_only_the_node_and_a_shared_cn() {
    let node = node();
    let grant = policy()
        .evaluate(&request("peer", &node), NOW, CA_NOT_AFTER)
        .unwrap();
    assert_eq!(sans(&grant), ["DNS:n1.etcd.internal", "IP:10.0.0.11"]);
    assert_eq!(grant.common_name(), "etcd-peer");
    assert_eq!(
        grant.extended_key_usages(),
        [ExtendedKeyUsage::ServerAuth, ExtendedKeyUsage::ClientAuth]
    );
}

#[test]
fn client_certificates_are_client_auth_only_with_the_user_as_cn_and_no_sans() {
    let node = node();
    let mut req = request("client", &node);
    req.common_name = Some("kube-apiserver");
    let grant = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
    assert_eq!(grant.extended_key_usages(), [ExtendedKeyUsage::ClientAuth]);
    assert_eq!(grant.common_name(), "kube-apiserver");
    assert!(grant.sans().is_empty());
}

#[test]
fn root_is_refused_unless_explicitly_allowed() {
    let node = node();
    let mut req = request("client", &node);
    req.common_name = Some("root");
    let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
    assert!(
        matches!(err, PolicyError::PrivilegedCommonName { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--allow-root"), "{err}");
    req.allow_privileged_common_name = true;
    assert_eq!(
        policy()
            .evaluate(&req, NOW, CA_NOT_AFTER)
            .unwrap()
            .common_name(),
        "root"
    );
}

#[test]
fn member_names_are_reserved_for_clients() {
    let node = node();
    for cn in ["etcd-peer", "etcd-server:n2"] {
        let mut req = request("client", &node);
        req.common_name = Some(cn);
        req.allow_privileged_common_name = true;
        let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
        assert!(
            matches!(err, PolicyError::ReservedCommonName { .. }),
            "{cn}: {err:?}"
        );
    }
}

#[test]
fn client_without_cn_and_server_with_foreign_cn_are_refused() {
    let node = node();
    let err = policy()
        .evaluate(&request("client", &node), NOW, CA_NOT_AFTER)
        .unwrap_err();
    assert!(
        matches!(err, PolicyError::CommonNameRequired { .. }),
        "{err:?}"
    );
    let mut req = request("server", &node);
    req.common_name = Some("root");
    let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
    assert!(
        matches!(err, PolicyError::CommonNameFixed { .. }),
        "{err:?}"
    );
}

#[test]
fn addresses_outside_the_allowed_ranges_are_refused_with_the_name() {
    let node = NodeIdentity::new(
        "n1".parse().unwrap(),
        vec!["8.8.8.8".parse().unwrap()],
        vec![],
    );
    let err = policy()
        .evaluate(&request("server", &node), NOW, CA_NOT_AFTER)
        .unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::IpNotAllowed { .. } | PolicyError::DnsNameNotAllowed { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("8.8.8.8"), "{err}");
    assert!(err.to_string().contains("10.0.0.0/8"), "{err}");
}

#[test]
fn dns_patterns_limit_names() {
    let mut policy = policy();
    policy.dns_names = vec!["*.etcd.internal".into(), "exact.example".into()];
    let ok = |name: &str| policy.check_dns_name(&name.parse().unwrap()).is_ok();
    assert!(ok("n1.etcd.internal"));
    assert!(ok("a.b.etcd.internal"));
    assert!(ok("exact.example"));
    assert!(!ok("etcd.internal"));
    assert!(!ok("evil-etcd.internal"));
    assert!(!ok("n1.example"));
}

#[test]
fn csr_names_must_stay_within_the_grant() {
    let node = node();
    let inside = [San::parse_loose("10.0.0.11").unwrap()];
    let mut req = request("peer", &node);
    req.requested_sans = &inside;
    assert!(policy().evaluate(&req, NOW, CA_NOT_AFTER).is_ok());

    let outside = [San::parse_loose("10.0.0.12").unwrap()];
    req.requested_sans = &outside;
    let err = policy().evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
    assert!(
        matches!(err, PolicyError::SanOutsideIdentity { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("IP:10.0.0.12"), "{err}");

    // localhost belongs to server certificates, not peer certificates.
    let local = [San::parse_loose("localhost").unwrap()];
    req.requested_sans = &local;
    assert!(policy().evaluate(&req, NOW, CA_NOT_AFTER).is_err());
}

#[test]
fn lifetimes_default_are_capped_by_the_maximum_and_by_the_ca() {
    let node = node();
    let p = policy();
    let grant = p
        .evaluate(&request("server", &node), NOW, CA_NOT_AFTER)
        .unwrap();
    assert_eq!(grant.not_after(), NOW + time::Duration::days(90));
    assert_eq!(grant.not_before(), NOW - time::Duration::minutes(5));

    let mut req = request("server", &node);
    req.lifetime = Some(Duration::from_secs(1000 * 86400));
    let grant = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
    assert_eq!(grant.not_after(), NOW + time::Duration::days(365));

    req.lifetime = Some(Duration::from_secs(3600));
    let grant = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
    assert_eq!(grant.not_after(), NOW + time::Duration::hours(1));

    let ca_ends_soon = NOW + time::Duration::days(10);
    let grant = p
        .evaluate(&request("server", &node), NOW, ca_ends_soon)
        .unwrap();
    assert_eq!(grant.not_after(), ca_ends_soon);

    let err = p
        .evaluate(&request("server", &node), ca_ends_soon, ca_ends_soon)
        .unwrap_err();
    assert!(matches!(err, PolicyError::IssuerExpired { .. }), "{err:?}");
}

#[test]
fn rsa_keys_also_get_key_encipherment_and_key_types_follow_policy() {
    let node = node();
    let mut p = policy();
    let mut req = request("server", &node);
    req.key_type = KeyType::Rsa;
    let grant = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap();
    assert_eq!(
        grant.key_usages(),
        [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
    );
    p.allowed_key_types = vec![KeyType::EcdsaP256];
    let err = p.evaluate(&req, NOW, CA_NOT_AFTER).unwrap_err();
    assert!(
        matches!(err, PolicyError::KeyTypeNotAllowed { .. }),
        "{err:?}"
    );
}

#[test]
fn unknown_profiles_list_the_known_ones() {
    let node = node();
    let err = policy()
        .evaluate(&request("admin-ish", &node), NOW, CA_NOT_AFTER)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown profile \"admin-ish\" (known profiles: admin, client, peer, server)"
    );
}

#[test]
fn renewals_keep_the_recorded_identity_and_take_lifetimes_from_the_profile() {
    let p = policy();
    let node: NodeName = "n1".parse().unwrap();
    let sans = [
        San::parse_loose("10.0.0.11").unwrap(),
        San::parse_loose("localhost").unwrap(),
    ];
    let renewal = Renewal {
        profile: "server",
        node: &node,
        common_name: "whatever-was-recorded",
        sans: &sans,
        key_type: KeyType::EcdsaP256,
    };
    let grant = p.evaluate_renewal(&renewal, NOW, CA_NOT_AFTER).unwrap();
    assert_eq!(grant.sans(), sans);
    assert_eq!(grant.common_name(), "etcd-server:n1");
    assert_eq!(grant.not_after(), NOW + time::Duration::days(90));

    // A root client certificate, once explicitly issued, renews as root.
    let root = Renewal {
        profile: "client",
        common_name: "root",
        sans: &[],
        ..renewal.clone()
    };
    assert_eq!(
        p.evaluate_renewal(&root, NOW, CA_NOT_AFTER)
            .unwrap()
            .common_name(),
        "root"
    );

    // A name the policy no longer allows is not renewed.
    let public = [San::parse_loose("8.8.8.8").unwrap()];
    let outside = Renewal {
        sans: &public,
        ..renewal.clone()
    };
    assert!(matches!(
        p.evaluate_renewal(&outside, NOW, CA_NOT_AFTER),
        Err(PolicyError::IpNotAllowed { .. })
    ));
}

fn file_error_of(text: &str) -> (usize, String, String) {
    match Policy::parse(text, Path::new("p.toml")).unwrap_err() {
        PolicyError::File {
            line, key, message, ..
        } => (line, key, message),
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn file_errors_name_the_line_and_the_key() {
    let bad_value = DEFAULT_POLICY.replacen(
        "default_lifetime = \"90d\"",
        "default_lifetime = \"ninety days\"",
        1,
    );
    let line = bad_value
        .lines()
        .position(|l| l.contains("ninety"))
        .unwrap()
        + 1;
    let (got_line, key, message) = file_error_of(&bad_value);
    assert_eq!(got_line, line);
    assert_eq!(key, "profiles.server.default_lifetime");
    assert!(message.contains("ninety days"), "{message}");

    let unknown_key =
        DEFAULT_POLICY.replacen("include_node_ips = true", "include_node_ipz = true", 1);
    let (got_line, key, message) = file_error_of(&unknown_key);
    assert_eq!(
        got_line,
        unknown_key.lines().position(|l| l.contains("ipz")).unwrap() + 1
    );
    assert!(key.starts_with("profiles.server"), "{key}");
    assert!(message.contains("include_node_ipz"), "{message}");

    let short_max = DEFAULT_POLICY.replacen("max_lifetime = \"365d\"", "max_lifetime = \"30d\"", 1);
    let (got_line, key, _) = file_error_of(&short_max);
    assert_eq!(key, "profiles.server.max_lifetime");
    assert_eq!(
        got_line,
        short_max
            .lines()
            .position(|l| l.contains("max_lifetime = \"30d\""))
            .unwrap()
            + 1
    );

    let (got_line, _, _) = file_error_of("[names\nip_ranges = []\n");
    assert_eq!(got_line, 1);
}

#[test]
fn a_retention_under_a_day_is_refused_as_the_slip_it_is() {
    let minute = DEFAULT_POLICY.replacen("audit_events = \"400d\"", "audit_events = \"12m\"", 1);
    assert_ne!(minute, DEFAULT_POLICY);
    let (line, key, message) = file_error_of(&minute);
    assert_eq!(key, "retention.audit_events");
    assert_eq!(
        line,
        minute.lines().position(|l| l.contains("\"12m\"")).unwrap() + 1
    );
    assert!(message.contains("shorter than a day"), "{message}");
    let policy = Policy::parse(DEFAULT_POLICY, Path::new("etcd.toml")).unwrap();
    assert_eq!(
        policy.retention.audit_events,
        Duration::from_secs(400 * 86400)
    );
}
