//! Tests of the store against real databases: a SQLite file, and PostgreSQL (see `test_db`).

use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;

use super::*;
use crate::names::NodeIdentity;

pub(super) fn at(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).unwrap()
}

pub(super) use super::test_db::on_both_backends;
use super::test_db::{empty_store, Keep};

/// An empty store on `backend` with generation 1 active.
pub(super) async fn store_with_generation(backend: Backend) -> (Store, Keep) {
    let (store, keep) = empty_store(backend).await;
    insert_first_generation(&store).await;
    (store, keep)
}

async fn insert_first_generation(store: &Store) {
    let generation = GenerationRecord {
        id: 1,
        state: GenerationState::Active,
        key_type: "ecdsa-p256".into(),
        cert_pem: "not parsed here".into(),
        fingerprint: "sha256:00".into(),
        key_file: "ca/gen-1.key".into(),
        imported: false,
        not_before: at(0),
        not_after: at(86_400 * 3650),
        activated_at: Some(at(0)),
        retired_at: None,
        created_at: at(0),
        endorsement_pem: None,
        key_pem: None,
    };
    store.insert_generation(&generation).await.unwrap();
}

pub(super) fn identity(name: &str, ip: &str) -> NodeIdentity {
    NodeIdentity::new(name.parse().unwrap(), vec![ip.parse().unwrap()], vec![])
}

pub(super) fn certificate(serial: &str, node: &str, renewed_from: Option<&str>) -> NewCertificate {
    NewCertificate {
        serial: serial.into(),
        ca_generation: 1,
        profile: "peer".into(),
        node: node.parse().unwrap(),
        subject: "CN=etcd-peer".into(),
        common_name: "etcd-peer".into(),
        sans: vec!["IP:10.0.0.1".into()],
        key_type: "ecdsa-p256".into(),
        public_key_sha256: "ab".repeat(32),
        not_before: at(0),
        not_after: at(86_400),
        pem: "-----BEGIN CERTIFICATE-----\nnot \"parsed\" here\n-----END CERTIFICATE-----\n".into(),
        issued_at: at(10),
        renewed_from: renewed_from.map(str::to_string),
    }
}

/// A peer certificate of node n1 with its identity and audit event, ready to record.
pub(super) fn issue(serial: &str) -> IssueRecord {
    IssueRecord {
        node: identity("n1", "10.0.0.1"),
        cert: certificate(serial, "n1", None),
        event: event(serial, "n1"),
    }
}

pub(super) fn event(serial: &str, node: &str) -> AuditEvent {
    AuditEvent {
        at: at(10),
        actor: "admin:ops".into(),
        action: "issue".into(),
        node: Some(node.into()),
        serial: Some(serial.into()),
        detail: "profile peer, CN etcd-peer".into(),
    }
}

on_both_backends! {
    async fn concurrent_issues_are_each_recorded_with_every_column_intact(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let node = format!("n{}", i % 5);
                    let cert = certificate(&format!("{i:032x}"), &node, None);
                    let event = event(&cert.serial, &node);
                    store
                        .record_issue(&identity(&node, "10.0.0.1"), &cert, &event)
                        .await
                })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        assert_eq!(store.certificate_counts().await.unwrap().0, 40);
        let stored = store
            .certificate(&format!("{:032x}", 7), at(20))
            .await
            .unwrap()
            .unwrap();
        let expected = certificate(&format!("{:032x}", 7), "n2", None);
        assert_eq!(stored.pem, expected.pem, "quotes and newlines survive");
        assert_eq!(stored.sans, expected.sans);
        assert_eq!(stored.node, "n2");
        assert_eq!(stored.not_after, expected.not_after);
        assert_eq!(stored.issued_at, expected.issued_at);
        assert_eq!(stored.renewed_from, None);
        assert_eq!(stored.status, CertificateStatus::Valid);
        let audit = store.audit_events(100).await.unwrap();
        assert_eq!(audit.iter().filter(|e| e.action == "issue").count(), 40);
        // Concurrent issues (grouped into multi-row inserts) each get their own recording order,
        // and of a node's certificates exactly one is current (the others are superseded).
        let row = store
            .pool
            .fetch_one(Sql::new(
                "SELECT COUNT(*), COUNT(DISTINCT seq), MIN(seq) FROM certificates",
            ))
            .await
            .unwrap();
        let (rows, distinct, lowest): (i64, i64, i64) =
            (row.at(0).unwrap(), row.at(1).unwrap(), row.at(2).unwrap());
        assert_eq!((rows, distinct), (40, 40));
        assert!(lowest >= 1);
        let n2 = store
            .certificates(
                &CertificateFilter {
                    node: Some("n2".into()),
                    ..Default::default()
                },
                at(20),
            )
            .await
            .unwrap();
        assert_eq!(n2.len(), 8);
        assert_eq!(
            n2.iter()
                .filter(|c| c.state == CertificateState::Valid)
                .count(),
            1
        );
        store.close().await;

    }
}

on_both_backends! {
    async fn a_node_s_certificates_and_identity_come_back_in_one_read(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        for (serial, node, ip) in [
            ("a1", "n1", "10.0.0.1"),
            ("a2", "n1", "10.0.0.1"),
            ("b1", "n2", "10.0.0.2"),
        ] {
            store
                .record_issue(
                    &identity(node, ip),
                    &certificate(serial, node, None),
                    &event(serial, node),
                )
                .await
                .unwrap();
        }
        let wanted = ["a1", "a2", "b1", "ffff"].map(String::from);
        let mut found = store.certificates_by_serial(&wanted, at(20)).await.unwrap();
        found.sort_by(|a, b| a.0.serial.cmp(&b.0.serial));
        let serials: Vec<&str> = found.iter().map(|(c, _)| c.serial.as_str()).collect();
        assert_eq!(serials, ["a1", "a2", "b1"], "an unknown serial is left out");
        for (cert, registered) in &found {
            let expected = if cert.node == "n1" {
                identity("n1", "10.0.0.1")
            } else {
                identity("n2", "10.0.0.2")
            };
            assert_eq!(registered.as_ref(), Some(&expected));
        }
        assert!(store
            .certificates_by_serial(&[], at(20))
            .await
            .unwrap()
            .is_empty());
        store.close().await;

    }
}

/// The WAL header's checkpoint sequence number: SQLite adds one each time it starts the WAL
/// over from its beginning.
pub(super) fn wal_restarts(db: &Path) -> u32 {
    let header = std::fs::read(db.with_extension("db-wal")).unwrap();
    u32::from_be_bytes(header[12..16].try_into().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_steady_load_and_commits_never_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ca.db");
    let store = Store::create(&db).await.unwrap();
    insert_first_generation(&store).await;
    let autocheckpoint: i64 = store
        .pool
        .scalar(Sql::new("PRAGMA wal_autocheckpoint"))
        .await
        .unwrap();
    assert_eq!(autocheckpoint, 0, "commits must not run checkpoints");
    let temp_store: i64 = store
        .pool
        .scalar(Sql::new("PRAGMA temp_store"))
        .await
        .unwrap();
    assert_eq!(
        temp_store, 2,
        "statement journals stay in memory, not in /var/tmp"
    );
    let before = wal_restarts(&db);
    // Sixteen writers with no pause between commits for 1.5 s: the committer is never idle,
    // so only the checkpointer's hand-over to the committer can start the WAL over.
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut written = 0;
                while std::time::Instant::now() < deadline {
                    let serial = format!("{w:02x}{written:06x}");
                    let node = format!("n{w}");
                    let cert = certificate(&serial, &node, None);
                    store
                        .record_issue(&identity(&node, "10.0.0.1"), &cert, &event(&serial, &node))
                        .await
                        .unwrap();
                    written += 1;
                }
                written
            })
        })
        .collect();
    let mut written = 0;
    for writer in writers {
        written += writer.await.unwrap();
    }
    let restarts = wal_restarts(&db) - before;
    assert!(
        restarts >= 3,
        "the WAL started over {restarts} times during 1.5 s of steady load ({written} writes)"
    );
    assert_eq!(store.certificate_counts().await.unwrap().0, written);
    assert_eq!(store.integrity_check().await.unwrap(), Integrity::Sound);
    store.close().await;
}

on_both_backends! {
    async fn one_bad_write_in_a_group_fails_alone(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let first = certificate("aa", "n1", None);
        store
            .record_issue(&identity("n1", "10.0.0.1"), &first, &event("aa", "n1"))
            .await
            .unwrap();
        // Sent together so they share groups: the duplicate serial must not sink the others.
        let serials: Vec<String> = (0..30)
            .map(|i| {
                if i == 15 {
                    "aa".into()
                } else {
                    format!("{i:02x}")
                }
            })
            .collect();
        let writes: Vec<_> = serials
            .iter()
            .map(|serial| {
                let (store, serial) = (store.clone(), serial.clone());
                tokio::spawn(async move {
                    let cert = certificate(&serial, "n1", Some("aa"));
                    let event = event(&serial, "n1");
                    store
                        .record_issue(&identity("n1", "10.0.0.1"), &cert, &event)
                        .await
                })
            })
            .collect();
        for (i, write) in writes.into_iter().enumerate() {
            let result = write.await.unwrap();
            assert_eq!(result.is_err(), i == 15, "write {i}: {result:?}");
            if i == 15 {
                // Told apart from other faults: the signer signs again with a new serial.
                assert!(
                    matches!(result, Err(StoreError::SerialTaken(_))),
                    "{result:?}"
                );
            }
        }
        assert_eq!(store.certificate_counts().await.unwrap().0, 30);
        let renewed = store.certificate("0c", at(20)).await.unwrap().unwrap();
        assert_eq!(renewed.renewed_from.as_deref(), Some("aa"));
        store.close().await;

    }
}

#[tokio::test]
async fn the_committer_keeps_its_connection_while_idle_and_gives_it_back_on_close() {
    let (store, _keep) = store_with_generation(Backend::Sqlite).await;
    let Pool::Sqlite(pool) = store.pool.clone() else {
        unreachable!("a SQLite store")
    };
    store.record_issues(vec![issue("01")]).await.unwrap();
    // Idle now: the committer still holds its connection (the checkpointer may hold
    // another for a moment), so the next commit finds its page cache warm.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let in_use = pool.size() as usize - pool.num_idle();
        assert!(in_use >= 1, "the idle committer gave its connection back");
    }
    // Closing does not wait for it forever: the committer hands it back.
    tokio::time::timeout(Duration::from_secs(5), store.close())
        .await
        .expect("close waited on the committer's connection");
    assert_eq!(pool.size(), 0);
    let late = tokio::time::timeout(
        Duration::from_secs(5),
        store.record_issues(vec![issue("02")]),
    )
    .await
    .expect("a write after close is answered");
    assert!(late.is_err(), "a write after close is refused");
}

on_both_backends! {
    async fn issues_recorded_together_are_recorded_all_or_none(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        store.record_issues(vec![issue("01")]).await.unwrap();
        let (before, _) = store.certificate_counts().await.unwrap();
        let batch = vec![issue("02"), issue("01"), issue("03")];
        assert!(store.record_issues(batch).await.is_err());
        assert_eq!(store.certificate_counts().await.unwrap().0, before);
        assert!(store.certificate("02", at(20)).await.unwrap().is_none());
        store
            .record_issues(vec![issue("02"), issue("03")])
            .await
            .unwrap();
        assert_eq!(store.certificate_counts().await.unwrap().0, before + 2);
        store.close().await;

    }
}

on_both_backends! {
    async fn a_node_keeps_its_latest_names(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let n1 = identity("n1", "10.0.0.1");
        store
            .record_issue(&n1, &certificate("01", "n1", None), &event("01", "n1"))
            .await
            .unwrap();
        assert_eq!(store.node(&n1.name).await.unwrap(), Some(n1.clone()));
        let moved = identity("n1", "10.0.0.9");
        store
            .record_issue(&moved, &certificate("02", "n1", None), &event("02", "n1"))
            .await
            .unwrap();
        assert_eq!(store.node(&n1.name).await.unwrap(), Some(moved));
        store.close().await;

    }
}

on_both_backends! {
    async fn each_generation_lists_only_the_revocations_it_issued_and_counts_its_own_crls(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let next = GenerationRecord {
            id: 2,
            state: GenerationState::Next,
            fingerprint: "sha256:02".into(),
            key_file: "ca/gen-2.key".into(),
            activated_at: None,
            ..store.generations().await.unwrap().remove(0)
        };
        store.insert_generation(&next).await.unwrap();
        let mut by_second = certificate("02", "n1", None);
        by_second.ca_generation = 2;
        let mut expired = certificate("03", "n1", None);
        expired.not_after = at(15);
        for cert in [certificate("01", "n1", None), by_second, expired] {
            let event = event(&cert.serial, "n1");
            store
                .record_issue(&identity("n1", "10.0.0.1"), &cert, &event)
                .await
                .unwrap();
        }
        for serial in ["01", "02", "03"] {
            store
                .revoke(serial, "keyCompromise", &event(serial, "n1"))
                .await
                .unwrap();
        }
        let serials = |entries: Vec<RevokedEntry>| -> Vec<String> {
            entries.into_iter().map(|e| e.serial).collect()
        };
        let now = at(20);
        assert_eq!(
            serials(store.revoked_unexpired(now).await.unwrap()),
            ["01", "02"]
        );
        assert_eq!(
            serials(store.revoked_unexpired_of_generation(1, now).await.unwrap()),
            ["01"],
            "the expired one is left out, and so is generation 2's"
        );
        assert_eq!(
            serials(store.revoked_unexpired_of_generation(2, now).await.unwrap()),
            ["02"]
        );
        assert!(store
            .revoked_unexpired_of_generation(3, now)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.next_crl_number(1).await.unwrap(), 1);
        assert_eq!(store.next_crl_number(1).await.unwrap(), 2);
        assert_eq!(
            store.next_crl_number(2).await.unwrap(),
            1,
            "one counter per issuer"
        );
        store.close().await;

    }
}

on_both_backends! {
    async fn the_fleet_s_packed_reads_decode_every_column(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let n1 = identity("n1", "10.0.0.1");
        let n2 = identity("n2", "10.0.0.2");
        for (serial, node) in [("0a", &n2), ("0b", &n1)] {
            let cert = certificate(serial, node.name.as_str(), None);
            store.record_issue(node, &cert, &event(serial, node.name.as_str())).await.unwrap();
        }
        store.revoke("0a", "keyCompromise", &event("0a", "n2")).await.unwrap();
        // A name with a quote and a backslash survives the JSON the database packs.
        let odd = r#"{"served":{"peer":{"error":"say \"no\" \\ here"}}}"#;
        for (node, details) in [("n2", odd), ("n1", "{}")] {
            store
                .upsert_node_report(&NodeReport {
                    node: node.into(),
                    installed_bundle: vec!["sha256:00".into()],
                    running_bundle: vec!["sha256:00".into(), "sha256:01".into()],
                    certificates: [("peer".to_string(), format!("0{}", if node == "n1" { 'b' } else { 'a' }))]
                        .into(),
                    reported_at: at(20),
                    details: details.into(),
                })
                .await
                .unwrap();
        }

        let current = store.current_certificates(at(30)).await.unwrap();
        let rows: Vec<(&str, &str, &str, i64)> = current
            .iter()
            .map(|c| (c.node.as_str(), c.profile.as_str(), c.serial.as_str(), c.ca_generation))
            .collect();
        // A revoked certificate is no node's current one.
        assert_eq!(rows, [("n1", "peer", "0b", 1)]);
        assert_eq!(current[0].not_after, at(86_400));
        assert!(store.current_certificates(at(86_400)).await.unwrap().is_empty());

        let fleet = store.fleet_reports().await.unwrap();
        assert_eq!(fleet.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(), ["n1", "n2"]);
        assert_eq!(fleet[1].details, odd);
        assert_eq!(fleet[1].certificates["peer"], "0a");
        assert_eq!(fleet[1].reported_at, at(20));

        let mut bundles = store.bundle_reports().await.unwrap();
        bundles.sort_by(|a, b| a.node.cmp(&b.node));
        assert_eq!(bundles[0].installed_bundle, ["sha256:00"]);
        assert_eq!(bundles[0].running_bundle, ["sha256:00", "sha256:01"]);
        assert_eq!(bundles[0].reported_at, at(20));

        let mut dates = store
            .certificate_dates(&["0a".into(), "0b".into(), "ff".into()])
            .await
            .unwrap();
        dates.sort_by(|a, b| a.serial.cmp(&b.serial));
        assert_eq!(dates.len(), 2, "an unknown serial is absent");
        assert_eq!(dates[0].revoked_at, Some(at(10)));
        assert_eq!(dates[1].revoked_at, None);
        assert_eq!(
            (dates[1].not_before, dates[1].not_after, dates[1].issued_at, dates[1].ca_generation),
            (at(0), at(86_400), at(10), 1)
        );
        // Nothing at all packs to an empty list, not an error.
        assert!(store.certificate_dates(&["ff".into()]).await.unwrap().is_empty());
        store.close().await;
    }
}
