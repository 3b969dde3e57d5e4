//! Crash consistency: certificates are issued by concurrent clients while the server is killed
//! with SIGKILL at random moments, many times. After every restart, every certificate a client
//! received is in the store; at the end the database passes `PRAGMA integrity_check` and every
//! serial is unique. The server always starts again on its own.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::CaServer;

const CA_PORT: u16 = 22781;
const ROUNDS: usize = 10;
const CLIENTS: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_certificate_a_client_received() {
    let listen = format!("127.0.0.1:{CA_PORT}");
    let mut server = CaServer::start(&[], &["--listen", &listen]);
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut seed = u64::from_be_bytes(
        etcd_ca::pki::sha256_hex(b"crash").as_bytes()[..8]
            .try_into()
            .unwrap(),
    );
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for c in 0..CLIENTS {
            let (admin, stop, received) = (server.admin(), stop.clone(), received.clone());
            clients.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"profile": "client", "node": "crash", "common_name": format!("r{round}c{c}n{i}")});
                    match admin.post_json::<_, Value>("/v1/issue", &body).await {
                        Ok(answer) => received
                            .lock()
                            .unwrap()
                            .push(answer["certificate"]["serial"].as_str().unwrap().to_string()),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    i += 1;
                }
            }));
        }
        // A random moment between 0.2 and 1.2 s into the load.
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        tokio::time::sleep(Duration::from_millis(200 + (seed >> 33) % 1000)).await;
        server.crash_and_restart();
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }

        let mut stored = BTreeSet::new();
        let mut path = "/v1/certs?node=crash".to_string();
        loop {
            let page: Value = server.admin().get_json(&path).await.unwrap();
            for c in page["certificates"].as_array().unwrap() {
                stored.insert(c["serial"].as_str().unwrap().to_string());
            }
            match page["next"].as_str() {
                Some(next) => path = format!("/v1/certs?node=crash&after={next}"),
                None => break,
            }
        }
        let received = received.lock().unwrap();
        let lost: Vec<&String> = received.iter().filter(|s| !stored.contains(*s)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} certificates handed out but not stored: {lost:?}",
            lost.len()
        );
    }
    let total = received.lock().unwrap().len();
    assert!(total > ROUNDS * 10, "only {total} certificates were issued");
    server.stop();

    let store = etcd_ca::store::Store::open(&server.ca.dir.join("etcd-ca.db"))
        .await
        .unwrap();
    assert_eq!(
        store.integrity_check().await.unwrap(),
        etcd_ca::store::Integrity::Sound
    );
    let (count, distinct) = store.certificate_counts().await.unwrap();
    assert_eq!(count, distinct, "serials are unique");
    assert!(count as usize >= total);
    store.close().await;
    eprintln!("crash: {total} certificates received across {ROUNDS} SIGKILLs, all stored");
}
