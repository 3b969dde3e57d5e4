//! The accept loop: TCP, then a TLS handshake with a deadline, then HTTP/1.1 with a header
//! deadline, for at most `max_connections` connections at once and `max_connections_per_address`
//! from one address. Writes have a deadline too, so a client that stops reading its answers
//! frees its slot; one that sends nothing is closed by the header deadline (which also ends
//! idle keep-alive connections). Stops accepting when the shutdown future completes and lets
//! in-flight requests finish.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::extract::{ClientAddr, ClientCertificate};

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A client must finish the TLS handshake within this.
    pub handshake_timeout: Duration,
    /// ...and send each request's headers within this.
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one address may hold; more are closed at once.
    pub max_connections_per_address: usize,
    /// A write (the client taking a response's bytes) must progress within this. Armed only
    /// while a write waits, so it costs nothing on the common path (a read deadline, re-armed at
    /// every request of a keep-alive connection, cost ~8% of the server's CPU per certificate
    /// at concurrency 32 and duplicated the header deadline).
    pub write_timeout: Duration,
    /// How long in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_address: 128,
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(address_slot) = per_address.take(peer.ip(), limits.max_connections_per_address)
        else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue;
        };
        // Nearly full: a client gets less time to finish its handshake.
        let handshake_timeout = if slots.available_permits() < limits.max_connections / 10 {
            limits.handshake_timeout.min(Duration::from_secs(2))
        } else {
            limits.handshake_timeout
        };
        let mut stream = tokio_io_timeout::TimeoutStream::new(tcp);
        stream.set_write_timeout(Some(limits.write_timeout));
        let stream = Box::pin(stream);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _address_slot = address_slot;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let client_certificate = ClientCertificate(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|c| Arc::new(c.to_vec())),
            );
            let client_addr = ClientAddr(peer.ip());
            let service = app.map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(client_certificate.clone());
                req.extensions_mut().insert(client_addr);
                req
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection =
                http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.shutdown_grace) => {
            tracing::warn!("in-flight requests did not finish in time; closing them");
        }
    }
}

/// How many connections each client address holds.
#[derive(Default)]
struct PerAddress {
    held: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection of an address; given back when dropped.
struct AddressSlot {
    owner: Arc<PerAddress>,
    address: IpAddr,
}

impl PerAddress {
    /// A slot for `address` unless it already holds `cap`.
    fn take(self: &Arc<Self>, address: IpAddr, cap: usize) -> Option<AddressSlot> {
        // A poisoned lock only means a panic while counting; the map is still usable.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(address).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            owner: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}
