//! Listings that stay flat as history grows: every filter seeks an index, pages cover every
//! row exactly once, and the current certificate of each node and profile follows issuance
//! and revocation.

use std::collections::BTreeMap;

use super::tests::{at, certificate, event, identity, on_both_backends, store_with_generation};
use super::*;

/// Records `count` certificates for nodes n0..n9 (profile peer or server), expiring at spread
/// times, through the group committer.
async fn fill(store: &Store, first: usize, count: usize) -> Vec<String> {
    let mut serials = Vec::new();
    let issues: Vec<IssueRecord> = (first..first + count)
        .map(|i| {
            let node = format!("n{}", i % 10);
            let mut cert = certificate(&format!("{:032x}", i * 7919 % 100_003), &node, None);
            cert.serial = format!("{i:08x}{}", &cert.serial[8..]);
            cert.profile = if i % 3 == 0 { "server" } else { "peer" }.into();
            cert.not_after = at(86_400 + (i as i64 % 50) * 3600);
            serials.push(cert.serial.clone());
            IssueRecord {
                node: identity(&node, "10.0.0.1"),
                event: event(&cert.serial, &node),
                cert,
            }
        })
        .collect();
    for chunk in issues.chunks(50) {
        store.record_issues(chunk.to_vec()).await.unwrap();
    }
    serials
}

/// The filters `list` and `GET /v1/certs` take, alone and together.
fn filters() -> Vec<CertificateFilter> {
    let mut all = vec![CertificateFilter::default()];
    let after = Some(CertificateCursor {
        not_after: at(90_000),
        serial: "00000010".into(),
    });
    for node in [None, Some("n3".to_string())] {
        for profile in [None, Some("peer".to_string())] {
            for state in [None]
                .into_iter()
                .chain(CertificateState::ALL.into_iter().map(Some))
            {
                for expiring_before in [None, Some(at(100_000))] {
                    for after in [None, after.clone()] {
                        all.push(CertificateFilter {
                            node: node.clone(),
                            profile: profile.clone(),
                            state,
                            expiring_before,
                            after,
                            limit: Some(100),
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    all
}

async fn plan(store: &Store, sql: Sql) -> Vec<String> {
    let rows = store.pool.fetch_all(sql).await.unwrap();
    rows.iter().map(|r| r.at::<String>(3).unwrap()).collect()
}

/// A plan that reads the whole certificates table, or sorts it, fails.
fn assert_no_scan(what: &str, plan: &[String]) {
    for line in plan {
        let whole_table = line.starts_with("SCAN certificates") && !line.contains("INDEX");
        assert!(
            !whole_table && !line.contains("TEMP B-TREE"),
            "{what}: {line:?} in {plan:#?}"
        );
    }
}

/// PostgreSQL's plan of `sql` with sequential scans priced out: one still chosen means no
/// index can serve the statement.
async fn postgres_plan(store: &Store, sql: Sql) -> Vec<String> {
    let mut tx = store.read_snapshot().await.unwrap();
    tx.execute(Sql::new("SET LOCAL enable_seqscan = off"))
        .await
        .unwrap();
    let rows = tx.fetch_all(sql).await.unwrap();
    tx.rollback().await.unwrap();
    rows.iter().map(|r| r.at::<String>(0).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_seeks_an_index_on_postgres_too() {
    let (store, _keep) = store_with_generation(Backend::Postgres).await;
    fill(&store, 0, 400).await;
    store
        .pool
        .execute(Sql::new("ANALYZE certificates"))
        .await
        .unwrap();
    for filter in filters() {
        let sql = certificates_query_after("EXPLAIN ", &filter, at(20));
        let plan = postgres_plan(&store, sql).await;
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on certificates")),
            "{filter:?}: {plan:#?}"
        );
    }
    for sql in [
        "EXPLAIN SELECT serial, revoked_at, revocation_reason FROM certificates
          WHERE status = 'revoked' AND not_after > 1 ORDER BY revoked_at, serial",
        "EXPLAIN SELECT node, profile, serial, seq FROM certificates
          WHERE node = 'n1' AND profile = 'peer' AND status = 'valid' ORDER BY seq DESC LIMIT 1",
    ] {
        let plan = postgres_plan(&store, Sql::new(sql)).await;
        assert!(
            !plan.iter().any(|l| l.contains("Seq Scan on certificates")),
            "{sql}: {plan:#?}"
        );
    }
}

#[tokio::test]
async fn every_listing_seeks_an_index() {
    let (store, _keep) = store_with_generation(Backend::Sqlite).await;
    fill(&store, 0, 400).await;
    for filter in filters() {
        let sql = certificates_query_after("EXPLAIN QUERY PLAN ", &filter, at(20));
        let plan = plan(&store, sql).await;
        assert_no_scan(&format!("{filter:?}"), &plan);
        // Not only an index: the one whose order the listing reads in (no full index walk
        // when a filter narrows it).
        if filter.node.is_some() || filter.state.is_some() || filter.expiring_before.is_some() {
            assert!(
                plan.iter().any(|l| l.starts_with("SEARCH certificates")),
                "{filter:?}: {plan:#?}"
            );
        }
    }
    // The other reads of many rows: the CRL, /metrics, rotation status.
    for (what, sql) in [
        (
            "revoked_unexpired",
            "EXPLAIN QUERY PLAN SELECT serial, revoked_at, revocation_reason FROM certificates
              WHERE status = 'revoked' AND not_after > 1 AND (NULL IS NULL OR ca_generation = NULL)
              ORDER BY revoked_at, serial",
        ),
        (
            "current_certificates",
            "EXPLAIN QUERY PLAN SELECT node, profile, not_after FROM current_certificates
              WHERE not_after > 1 ORDER BY node, profile",
        ),
        (
            "a node's newest valid certificate (the triggers)",
            "EXPLAIN QUERY PLAN SELECT node, profile, serial, seq FROM certificates
              WHERE node = 'n1' AND profile = 'peer' AND status = 'valid'
              ORDER BY seq DESC LIMIT 1",
        ),
    ] {
        let plan = plan(&store, Sql::new(sql)).await;
        let scans = plan
            .iter()
            .any(|l| l.starts_with("SCAN certificates") && !l.contains("INDEX"));
        assert!(!scans, "{what}: {plan:#?}");
    }
}

on_both_backends! {
    async fn pages_return_every_row_exactly_once_while_rows_are_added(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let before = fill(&store, 0, 600).await;
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { fill(&store, 600, 600).await })
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut filter = CertificateFilter {
            limit: Some(37),
            ..Default::default()
        };
        let mut pages = 0;
        loop {
            let page = store.certificates(&filter, at(20)).await.unwrap();
            pages += 1;
            for c in &page {
                *seen.entry(c.serial.clone()).or_default() += 1;
            }
            if page.len() < 37 {
                break;
            }
            filter.after = page.last().map(CertificateCursor::after);
            tokio::task::yield_now().await;
        }
        writer.await.unwrap();
        assert!(pages > 16, "{pages} pages");
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "listed twice: {twice:?}");
        let missing: Vec<_> = before.iter().filter(|s| !seen.contains_key(*s)).collect();
        assert!(missing.is_empty(), "never listed: {missing:?}");

    }
}

on_both_backends! {
    async fn the_current_certificate_follows_issuance_revocation_and_removal(backend) {
        let (store, _keep) = store_with_generation(backend).await;
        let node = identity("n1", "10.0.0.1");
        for serial in ["aa01", "aa02", "aa03"] {
            let cert = certificate(serial, "n1", None);
            store
                .record_issue(&node, &cert, &event(serial, "n1"))
                .await
                .unwrap();
        }
        let current = |store: Store| async move {
            store
                .pool
                .fetch_optional(Sql::new(
                    "SELECT serial FROM current_certificates WHERE node = 'n1' AND profile = 'peer'",
                ))
                .await
                .unwrap()
                .map(|r| r.at::<String>(0).unwrap())
        };
        assert_eq!(current(store.clone()).await.as_deref(), Some("aa03"));
        let state = |serial: &'static str, store: Store| async move {
            store
                .certificate(serial, at(20))
                .await
                .unwrap()
                .unwrap()
                .state
        };
        assert_eq!(
            state("aa02", store.clone()).await,
            CertificateState::Superseded
        );
        store
            .revoke("aa03", "keyCompromise", &event("aa03", "n1"))
            .await
            .unwrap();
        assert_eq!(current(store.clone()).await.as_deref(), Some("aa02"));
        assert_eq!(state("aa02", store.clone()).await, CertificateState::Valid);
        assert_eq!(
            state("aa01", store.clone()).await,
            CertificateState::Superseded
        );
        assert_eq!(store.revocation_epoch().await.unwrap(), 1);
        store
            .pool
            .execute(Sql::new("DELETE FROM certificates WHERE serial = 'aa02'"))
            .await
            .unwrap();
        assert_eq!(current(store.clone()).await.as_deref(), Some("aa01"));

    }
}
