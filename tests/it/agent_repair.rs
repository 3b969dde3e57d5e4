//! The agent repairs what it installed when someone or something damaged it: a truncated CRL
//! (which would make etcd refuse everyone) and an unreadable trust bundle are fetched again at
//! the next pass, not when the server's copy next changes.

use crate::helpers::{agent_once, etcd_ca, run_command, CaServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_crl_or_bundle_is_fetched_again_at_the_next_pass() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("pki");
    let token = server.ca.token(&["--node", "n1", "--profiles", "server"]);
    let pass = |extra: &[&str]| {
        run_command(agent_once(&server.url, &server.fingerprint, "n1", "server", &dir).args(extra))
            .ok()
    };
    pass(&["--token", &token]);
    let crl = dir.join("ca.crl");
    let bundle = dir.join("ca.crt");
    let served_crl = server.client().get("/v1/crl").await.unwrap().body.to_vec();
    let served_bundle = server.client().get("/v1/ca").await.unwrap().body.to_vec();
    assert_eq!(std::fs::read(&crl).unwrap(), served_crl);

    // Truncated: the next pass puts the server's CRL back.
    std::fs::write(&crl, &served_crl[..10]).unwrap();
    pass(&[]);
    assert_eq!(std::fs::read(&crl).unwrap(), served_crl);

    // Garbage in the bundle: fetched again through the pin.
    std::fs::write(&bundle, "not a certificate").unwrap();
    pass(&[]);
    assert_eq!(std::fs::read(&bundle).unwrap(), served_bundle);
    let status = etcd_ca(["agent", "status", "--dir", dir.to_str().unwrap()])
        .ok()
        .stdout;
    assert!(status.contains("ca.crl: valid"), "{status}");
}

/// A revoked certificate is not renewed: the agent says a token is needed, and once one is in
/// its token file it enrolls again, with a new key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_enrolled_again_with_a_new_key_once_a_token_is_there() {
    let server = CaServer::start(&[], &[]);
    let dir = server.ca.tmp.path().join("pki");
    let token_file = server.ca.tmp.path().join("token");
    let token = server
        .ca
        .token(&["--node", "n1", "--profiles", "peer", "--ip", "10.0.0.1"]);
    std::fs::write(&token_file, &token).unwrap();
    let pass = |extra: &[&str]| {
        run_command(
            agent_once(&server.url, &server.fingerprint, "n1", "peer", &dir)
                .arg("--token-file")
                .arg(&token_file)
                .args(extra),
        )
    };
    pass(&[]).ok();
    let cert = dir.join("peer.crt");
    let first = crate::rotation::serial_of(&cert);
    let first_key = std::fs::read(dir.join("peer.key")).unwrap();
    server.remote(&["revoke", &first]).ok();

    // The used token is still in the file: refused, and the error says what to do.
    let refused = pass(&["--renew-now"]).fails();
    assert!(
        refused.contains("a new bootstrap token is needed"),
        "{refused}"
    );
    assert_eq!(crate::rotation::serial_of(&cert), first);

    // A new token: enrolled again at the next pass (no --renew-now: the CRL says it).
    let token = server
        .ca
        .token(&["--node", "n1", "--profiles", "peer", "--ip", "10.0.0.1"]);
    std::fs::write(&token_file, &token).unwrap();
    pass(&[]).ok();
    let second = crate::rotation::serial_of(&cert);
    assert_ne!(second, first);
    assert_ne!(
        std::fs::read(dir.join("peer.key")).unwrap(),
        first_key,
        "a new key"
    );
    let listed = server.remote(&["show", &second, "--json"]).ok().stdout;
    assert!(listed.contains("\"valid\""), "{listed}");
    // And it renews normally from there.
    pass(&["--renew-now"]).ok();
    assert_ne!(crate::rotation::serial_of(&cert), second);
}
