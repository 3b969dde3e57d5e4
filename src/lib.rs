//! etcd-ca: a certificate authority built for etcd clusters.
//!
//! Data flows one way:
//!
//! ```text
//! CA host:  cli ──> api ──> authority ──> policy   (pure: request + now -> Grant or refusal)
//!            │                  │
//!            └──> authority     └──────> store    (SQLite or PostgreSQL: generations, certificates, audit)
//! node:     cli ──> agent ──> client ──(HTTPS, wire types)──> api
//! ```
//!
//! - [`cli`]: clap commands, each a thin call into the library (on the data dir, or through
//!   [`client`] against a running server).
//! - [`wire`]: every request and response body of the API, written once; the server's records
//!   are turned into wire types at the edge, so no store row goes on the wire.
//! - [`api`]: the HTTPS server (axum over rustls), one error-to-status mapping;
//!   [`api::follow`] keeps its certificate and the state agents long-poll in step with the CA,
//!   however the CA changed; [`api::fleet`] builds the fleet (issued, installed, served, marked)
//!   that `/v1/fleet`, the metrics, the web view ([`api::ui`]) and `etcd-ca check` show.
//! - [`authority`]: the only code that signs; owns the data dir, CA generations, issue, revoke,
//!   CRL, rotation, backup, retention (tidy), and the server's own certificate.
//! - [`policy`]: policy files and the decision for one request. No I/O, time passed in.
//! - [`store`]: every SQL statement, written once for SQLite and PostgreSQL ([`store::StoreConfig`]).
//! - [`pki`], [`names`], [`duration`]: validated building blocks (keys, certificates, names, spans).
//! - [`client`]: the HTTPS client of the CLI's remote mode and the agent (wire types, pinned CA
//!   fingerprints, mTLS; [`client::probe`] reads what an etcd member serves); [`lineage`]
//!   decides which CAs a pinned fingerprint vouches for across rotations (pure).
//! - [`agent`]: the renewal agent on each node (and what it reports: [`agent::observe`]).
//! - [`clock`]: the one "now" (tests move it for a running server and agent).
//! - [`hardening`]: no core dumps or ptrace of processes holding keys.
//! - [`fsutil`]: atomic file writes; [`inspect`], [`etcd_flags`]: what the CLI prints about files.

pub mod agent;
pub mod api;
pub mod authority;
pub mod cli;
pub mod client;
pub mod clock;
pub mod duration;
pub mod etcd_flags;
pub mod fsutil;
pub mod hardening;
pub mod inspect;
pub mod lineage;
pub mod names;
pub mod pki;
pub mod policy;
pub mod store;
pub mod wire;

/// An error and its sources on one line: `outer: inner: innermost`, skipping repeats.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
