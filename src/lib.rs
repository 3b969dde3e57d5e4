//! etcd-ca: a certificate authority built for etcd clusters.
//!
//! Data flows one way:
//!
//! ```text
//! cli ──> authority ──> policy   (pure: request + now -> Grant or refusal)
//!             │
//!             └──────> store    (SQLite: generations, nodes, certificates, audit)
//! ```
//!
//! - [`cli`]: clap commands, each a thin call into the library.
//! - [`authority`]: the only code that signs; owns the data dir, CA generations, issue, revoke, CRL.
//! - [`policy`]: policy files and the decision for one request. No I/O, time passed in.
//! - [`store`]: every SQL statement.
//! - [`pki`], [`names`], [`duration`]: validated building blocks (keys, certificates, names, spans).
//! - [`api`]: the HTTPS server; [`api::follow`] keeps its certificate and the state agents
//!   long-poll in step with the CA, however the CA changed.
//! - [`client`]: the HTTPS client of the CLI's remote mode and the agent; [`lineage`] decides
//!   which CAs a pinned fingerprint vouches for across rotations (pure).
//! - [`agent`]: the renewal agent on each node.
//! - [`fsutil`]: atomic file writes; [`inspect`], [`etcd_flags`]: what the CLI prints about files.

pub mod agent;
pub mod api;
pub mod authority;
pub mod cli;
pub mod client;
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
