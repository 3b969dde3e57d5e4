//! Connection slots cannot be held hostage: a client that sends requests but never reads the
//! answers loses its connections after the write deadline, and one address cannot take every
//! slot, so a well-behaved client from elsewhere is answered at once.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{tls_client_config, tls_connect, CaServer};

fn addr(server: &CaServer) -> SocketAddr {
    server.url.trim_start_matches("https://").parse().unwrap()
}

/// `GET /v1/health` over a fresh connection from `source`; the time it took, or an error.
async fn health_from(server: &CaServer, source: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(format!("{source}:0").parse().unwrap())
        .map_err(|e| e.to_string())?;
    let tcp = socket
        .connect(addr(server))
        .await
        .map_err(|e| e.to_string())?;
    let config = tls_client_config(&server.ca.dir.join("ca/gen-1.crt"), None);
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr(server).ip().into()),
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /v1/health HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    if !answer.starts_with("HTTP/1.1 200") {
        return Err(format!("unexpected answer {answer:?}"));
    }
    Ok(started.elapsed())
}

/// Five health checks from 127.0.0.2 (another address than the hogs'), each under 1 s.
async fn answered_at_once_from_elsewhere(server: &CaServer) {
    for _ in 0..5 {
        let took = tokio::time::timeout(Duration::from_secs(10), health_from(server, "127.0.0.2"))
            .await
            .expect("another address was locked out")
            .unwrap();
        assert!(took < Duration::from_secs(1), "health took {took:?}");
    }
}

/// A client that pipelines requests on one TLS connection and never reads an answer, until
/// the server closes on it or `stop` is set.
fn never_reads(server: &CaServer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let addr = addr(server);
    let config = tls_client_config(&server.ca.dir.join("ca/gen-1.crt"), None);
    std::thread::spawn(move || {
        let Ok(mut stream) = tls_connect(addr, addr.ip(), config) else {
            return;
        };
        stream
            .sock
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let request = b"GET /v1/ca HTTP/1.1\r\nHost: ca\r\n\r\n".repeat(200);
        while !stop.load(Ordering::Relaxed) {
            match stream.write_all(&request) {
                Ok(()) => {}
                // Our own buffers are full: the server is not reading either. Keep holding on.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_answers_lose_their_connections() {
    let server = CaServer::start(
        &[],
        &[
            "--max-connections",
            "4",
            "--max-connections-per-address",
            "4",
            "--write-timeout",
            "2s",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..4).map(|_| never_reads(&server, stop.clone())).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every slot is taken by a client that does not read; the write deadline frees them.
    let took = tokio::time::timeout(Duration::from_secs(20), health_from(&server, "127.0.0.1"))
        .await
        .expect("a well-behaved client was locked out")
        .unwrap();
    eprintln!("health answered after {took:?} with every slot held by non-readers");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_slot() {
    let server = CaServer::start(
        &[],
        &[
            "--max-connections",
            "8",
            "--max-connections-per-address",
            "2",
        ],
    );
    // 127.0.0.1 keeps opening connections that say nothing, reopening each one closed.
    let stop = Arc::new(AtomicBool::new(false));
    let target = addr(&server);
    let hog = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                held.retain(|s| {
                    let mut probe = [0u8; 1];
                    s.set_nonblocking(true).unwrap();
                    !matches!(std::io::Read::read(&mut &*s, &mut probe), Ok(0))
                });
                while held.len() < 20 {
                    match TcpStream::connect(target) {
                        Ok(s) => held.push(s),
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    answered_at_once_from_elsewhere(&server).await;
    stop.store(true, Ordering::Relaxed);
    hog.join().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_readers_at_their_address_cap_leave_room_for_everyone_else() {
    let server = CaServer::start(
        &[],
        &[
            "--max-connections",
            "8",
            "--max-connections-per-address",
            "4",
        ],
    );
    // Six clients from 127.0.0.1 pipeline requests and never read; four get in.
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..6).map(|_| never_reads(&server, stop.clone())).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    answered_at_once_from_elsewhere(&server).await;
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
}
