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
