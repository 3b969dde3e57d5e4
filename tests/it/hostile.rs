//! Hostile input, generated: arbitrary and mutated bytes go to CSR parsing, policy parsing and
//! evaluation, and every JSON endpoint of the real router (real authority, real database).
//! Nothing panics, every refusal is a 4xx, and nothing is written.

use std::sync::Arc;

use axum::body::Body;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use time::macros::datetime;
use tower::ServiceExt;

use etcd_ca::names::{NodeIdentity, San};
use etcd_ca::pki::{KeyType, VerifiedCsr};
use etcd_ca::policy::{Policy, Request, DEFAULT_POLICY};

use crate::helpers::{TestCa, PASSPHRASE};

fn valid_csr_der() -> Vec<u8> {
    let (pem_text, _) = crate::csr::rcgen(&["10.0.0.1", "n1.example"], KeyType::EcdsaP256);
    pem::parse(&pem_text).unwrap().into_contents()
}

/// Flips, deletes or inserts bytes of `original` at positions drawn by proptest.
fn mutated(original: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = original.len();
    prop::collection::vec((0..len, any::<u8>(), 0u8..3), 1..6).prop_map(move |edits| {
        let mut bytes = original.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len().saturating_sub(1));
            match kind {
                0 if !bytes.is_empty() => bytes[at] ^= byte | 1,
                1 if !bytes.is_empty() => {
                    bytes.remove(at);
                }
                _ => bytes.insert(at, byte),
            }
        }
        bytes
    })
}

/// Cases per input class: `default` in CI; a scheduled long run sets `PROPTEST_CASES`
/// (e.g. `PROPTEST_CASES=100000 cargo test --test it hostile`).
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn csr_parsing_never_panics() {
    let mut runner = TestRunner::new(Config {
        cases: cases(512),
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..600), |bytes| {
            let _ = VerifiedCsr::from_der(&bytes);
            let _ = VerifiedCsr::from_pem(&String::from_utf8_lossy(&bytes));
            Ok(())
        })
        .unwrap();
    let valid = valid_csr_der();
    runner
        .run(&mutated(valid.clone()), |bytes| {
            // A mutated CSR either fails or, if it still parses and verifies, names a key.
            if let Ok(csr) = VerifiedCsr::from_der(&bytes) {
                prop_assert!(!csr.public_key.is_empty());
            }
            let pem_text = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", bytes));
            let _ = VerifiedCsr::from_pem(&pem_text);
            Ok(())
        })
        .unwrap();
}

fn san() -> impl Strategy<Value = San> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| San::Ip(std::net::IpAddr::from(o))),
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,5}){0,2}"
            .prop_filter_map("dns", |d| d.parse().ok().map(San::Dns)),
    ]
}

#[test]
fn policy_parsing_and_evaluation_never_panic_and_grants_respect_the_policy() {
    let mut runner = TestRunner::new(Config {
        cases: cases(512),
        ..Config::default()
    });
    // Arbitrary text, and the real policy with bytes changed.
    runner
        .run(&any::<String>(), |text| {
            let _ = Policy::parse(&text, std::path::Path::new("fuzz.toml"));
            Ok(())
        })
        .unwrap();
    runner
        .run(&mutated(DEFAULT_POLICY.as_bytes().to_vec()), |bytes| {
            let _ = Policy::parse(
                &String::from_utf8_lossy(&bytes),
                std::path::Path::new("fuzz.toml"),
            );
            Ok(())
        })
        .unwrap();

    let policy = Policy::parse(DEFAULT_POLICY, std::path::Path::new("etcd.toml")).unwrap();
    let now = datetime!(2026-11-22 12:00 UTC);
    let issuer_not_after = datetime!(2036-11-22 12:00 UTC);
    let requests = (
        prop_oneof![
            Just("server".to_string()),
            Just("peer".to_string()),
            Just("client".to_string()),
            Just("admin".to_string()),
            ".{0,12}"
        ],
        prop::collection::vec(any::<[u8; 4]>(), 0..4),
        prop::collection::vec(san(), 0..4),
        prop::option::of(".{0,70}"),
        prop::option::of(any::<u64>()),
        any::<bool>(),
    );
    runner
        .run(
            &requests,
            |(profile, ips, requested, cn, lifetime, allow_root)| {
                let node = NodeIdentity::new(
                    "n1".parse().unwrap(),
                    ips.into_iter().map(std::net::IpAddr::from).collect(),
                    vec![],
                );
                let request = Request {
                    profile: &profile,
                    node: &node,
                    common_name: cn.as_deref(),
                    requested_sans: &requested,
                    lifetime: lifetime.map(std::time::Duration::from_secs),
                    key_type: KeyType::EcdsaP256,
                    allow_privileged_common_name: allow_root,
                };
                if let Ok(grant) = policy.evaluate(&request, now, issuer_not_after) {
                    let p = policy.profile(grant.profile()).unwrap();
                    prop_assert!(grant.not_after() <= issuer_not_after);
                    prop_assert!(
                        grant.not_after() - now
                            <= time::Duration::try_from(p.max_lifetime).unwrap()
                    );
                    prop_assert!(grant.not_before() < now);
                    for s in grant.sans() {
                        let allowed = p.extra_sans.contains(s)
                            || match s {
                                San::Ip(ip) => policy.ip_ranges.iter().any(|r| r.contains(ip)),
                                San::Dns(_) => true,
                            };
                        prop_assert!(allowed, "{s} granted");
                    }
                    prop_assert!(requested.iter().all(|s| grant.sans().contains(s)));
                    prop_assert!(grant.common_name() != "root" || allow_root);
                    prop_assert!(grant.common_name() != "etcd-peer" || grant.profile() == "peer");
                }
                Ok(())
            },
        )
        .unwrap();
}

/// Every JSON endpoint, with and without admin credentials.
const ENDPOINTS: [&str; 8] = [
    "/v1/enroll",
    "/v1/renew",
    "/v1/tokens",
    "/v1/issue",
    "/v1/certs/00ff/revoke",
    "/v1/rotation/start",
    "/v1/agent/report",
    "/v1/rotation/lease",
];

#[test]
fn every_json_endpoint_refuses_garbage_with_a_4xx_and_writes_nothing() {
    let ca = TestCa::init(&[]);
    let admin_token =
        crate::helpers::etcd_ca(["admin-token", "create", "--data-dir", ca.data_dir()])
            .ok()
            .stdout
            .trim()
            .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, store) = rt.block_on(async {
        let passphrase = etcd_ca::authority::keyfile::Passphrase::new(PASSPHRASE).unwrap();
        let authority = etcd_ca::authority::Authority::open(&ca.dir)
            .await
            .unwrap()
            .with_passphrase(Some(passphrase));
        let state = etcd_ca::api::AppState {
            authority: Arc::new(authority),
            metrics: Arc::new(Default::default()),
            limiter: Arc::new(etcd_ca::api::limits::AttemptLimiter::new(
                etcd_ca::api::limits::AttemptLimits {
                    per_source: u32::MAX,
                    per_token: u32::MAX,
                    window: std::time::Duration::from_secs(1),
                },
            )),
            anonymous: Default::default(),
            watched: tokio::sync::watch::channel(etcd_ca::api::follow::Watched {
                version: "v".into(),
                closing: false,
            })
            .1,
        };
        let store = etcd_ca::store::Store::open(&ca.dir.join("etcd-ca.db"))
            .await
            .unwrap();
        (etcd_ca::api::app(state), store)
    });
    let counts = || {
        rt.block_on(async {
            (
                store.certificate_counts().await.unwrap(),
                store.token_counts().await.unwrap(),
            )
        })
    };
    let before = counts();

    let send = |path: &str, body: Vec<u8>, admin: bool, content_type: &str| {
        let mut request = axum::http::Request::post(path).header("content-type", content_type);
        if admin {
            request = request.header("authorization", format!("Bearer {admin_token}"));
        }
        let request = request.body(Body::from(body)).unwrap();
        rt.block_on(app.clone().oneshot(request)).unwrap().status()
    };

    let mut runner = TestRunner::new(Config {
        cases: cases(256),
        ..Config::default()
    });
    let garbage = (
        prop::sample::select(ENDPOINTS.to_vec()),
        prop::collection::vec(any::<u8>(), 1..2048)
            .prop_filter("a body", |b| !b.iter().all(u8::is_ascii_whitespace)),
        any::<bool>(),
        prop_oneof![
            Just("application/json".to_string()),
            Just("text/plain".to_string()),
            "[ -~]{0,20}"
        ],
    );
    runner
        .run(&garbage, |(path, body, admin, content_type)| {
            let status = send(path, body, admin, &content_type);
            prop_assert!(status.is_client_error(), "{path}: {status}");
            Ok(())
        })
        .unwrap();

    // Valid shapes with bytes changed (a spent-looking token, an unknown node's names).
    let valid_enroll = serde_json::json!({
        "token": format!("etcdca_{}_{}", "a".repeat(16), "b".repeat(64)),
        "csrs": {"server": pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", valid_csr_der()))},
    })
    .to_string()
    .into_bytes();
    runner
        .run(&mutated(valid_enroll), |body| {
            let status = send("/v1/enroll", body, false, "application/json");
            prop_assert!(status.is_client_error(), "{status}");
            Ok(())
        })
        .unwrap();
    let valid_token = serde_json::json!({"node": "n1", "ips": ["8.8.8.8"], "profiles": ["server"]})
        .to_string()
        .into_bytes();
    runner
        .run(&mutated(valid_token), |body| {
            let status = send("/v1/tokens", body, true, "application/json");
            // A mutation may still be a valid request for a public address: policy refuses it.
            prop_assert!(status.is_client_error(), "{status}");
            Ok(())
        })
        .unwrap();

    assert_eq!(counts(), before, "nothing was written");
}
