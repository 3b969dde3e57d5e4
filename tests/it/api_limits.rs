//! The server survives clients that connect and send nothing, and stops gracefully: a request
//! in flight at SIGTERM is answered, and the database is closed cleanly. (And it negotiates the
//! TLS suite in its own order.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::CaServer;

/// True when the peer closed the connection; false when it is still open (the read timed out).
fn closed_by_peer(result: std::io::Result<usize>) -> bool {
    match result {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

fn addr(server: &CaServer) -> String {
    server.url.trim_start_matches("https://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_neither_block_the_server_nor_stay_open() {
    // All from one address: the per-address cap (api_slots) is not what this test is about.
    let server = CaServer::start(
        &[],
        &[
            "--handshake-timeout",
            "2s",
            "--header-timeout",
            "2s",
            "--max-connections-per-address",
            "400",
        ],
    );
    // 300 clients connect and say nothing.
    let silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(addr(&server)).unwrap())
        .collect();
    // One finishes TLS and then says nothing.
    let tls_silent = crate::helpers::tls_connect(
        addr(&server).parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        crate::helpers::tls_client_config(&server.ca.dir.join("ca/gen-1.crt"), None),
    )
    .unwrap();
    // The server picks its own suite order: this client (rustls' defaults) asks for AES-256
    // first, the server answers with the cheaper AES-128-GCM-SHA256.
    assert_eq!(
        tls_silent.conn.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );

    let started = Instant::now();
    let health: Value = server.client().get_json("/v1/health").await.unwrap();
    assert_eq!(health["status"], "ok");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "health took {:?}",
        started.elapsed()
    );

    // Past the deadlines the server has closed every one of them.
    std::thread::sleep(Duration::from_secs(3));
    for mut sock in silent {
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            closed_by_peer(sock.read(&mut buf)),
            "an idle connection is still open"
        );
    }
    let mut tls_silent = tls_silent;
    tls_silent
        .sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        closed_by_peer(tls_silent.read(&mut buf)),
        "a TLS connection without a request is still open"
    );
    let health: Value = server.client().get_json("/v1/health").await.unwrap();
    assert_eq!(health["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_closes_the_database() {
    let mut server = CaServer::start(&[], &[]);
    let config = crate::helpers::tls_client_config(&server.ca.dir.join("ca/gen-1.crt"), None);
    let mut stream = crate::helpers::tls_connect(
        addr(&server).parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        config,
    )
    .unwrap();
    // Headers and half the body now, the rest after SIGTERM.
    let body = br#"{"token": "etcdca_nope", "csrs": {}}"#;
    let head = format!(
        "POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..10]).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body[10..]).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 401"), "{response:?}");
    assert!(response.contains("token_invalid"), "{response}");

    assert_eq!(server.stop(), Some(0));
    let log = server.log_text();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("etcd-ca server stopped"), "{log}");
    // SQLite removes the WAL when the last connection closes cleanly.
    assert!(!server.ca.dir.join("etcd-ca.db-wal").exists());
}
