//! A cluster built with today's recipes moves to etcd-ca without re-trusting or re-keying
//! anything: its CA is imported, its existing leaf certificates are adopted, and the agent renews
//! them in place like its own (same key, same names, still chaining to the original ca.crt).

use std::process::Command;

use crate::helpers::{etcd_ca, openssl, CaServer};

#[test]
fn kubeadm_style_certificates_are_adopted_and_renewed_in_place() {
    let legacy_tmp = tempfile::tempdir().unwrap();
    let legacy = legacy_tmp.path();
    // What kubeadm leaves in /etc/kubernetes/pki/etcd: an RSA CA, RSA leaves, PKCS#1 keys.
    openssl(
        legacy,
        &["genrsa", "-traditional", "-out", "ca.key", "2048"],
    );
    openssl(
        legacy,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=etcd-ca",
            "-days",
            "3650",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        legacy,
        &["genrsa", "-traditional", "-out", "server.key", "2048"],
    );
    openssl(
        legacy,
        &[
            "req",
            "-new",
            "-key",
            "server.key",
            "-subj",
            "/CN=n1",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        legacy.join("ext.cnf"),
        "subjectAltName=DNS:n1,DNS:localhost,IP:10.0.0.11,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )
    .unwrap();
    openssl(
        legacy,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "365",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );

    let server = CaServer::start(
        &[
            "--import-cert",
            legacy.join("ca.crt").to_str().unwrap(),
            "--import-key",
            legacy.join("ca.key").to_str().unwrap(),
        ],
        &[],
    );
    let adopted = etcd_ca([
        "adopt",
        "--data-dir",
        server.ca.data_dir(),
        "--profile",
        "server",
        "--node",
        "n1",
        legacy.join("server.crt").to_str().unwrap(),
    ])
    .ok();
    assert!(adopted.stdout.contains("Adopted"), "{}", adopted.stdout);
    // Adopting twice, or a certificate from another CA, is refused.
    let err = etcd_ca([
        "adopt",
        "--data-dir",
        server.ca.data_dir(),
        "--profile",
        "server",
        "--node",
        "n1",
        legacy.join("server.crt").to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("already recorded"), "{err}");
    let err = etcd_ca([
        "adopt",
        "--data-dir",
        server.ca.data_dir(),
        "--profile",
        "server",
        "--node",
        "n1",
        server.ca.dir.join("ca/gen-1.crt").to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("this is a CA certificate"), "{err}");
    let foreign = crate::helpers::TestCa::init(&[]);
    let foreign_out = foreign.tmp.path().join("out");
    foreign.issue(
        &foreign_out,
        &["--profile", "server", "--node", "n1", "--ip", "10.0.0.11"],
    );
    let err = etcd_ca([
        "adopt",
        "--data-dir",
        server.ca.data_dir(),
        "--profile",
        "server",
        "--node",
        "n1",
        foreign_out.join("server.crt").to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("not issued by this CA"), "{err}");

    // The node's PKI dir as kubeadm left it.
    let pki = server.ca.tmp.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    for file in ["ca.crt", "server.crt", "server.key"] {
        std::fs::copy(legacy.join(file), pki.join(file)).unwrap();
    }
    let old = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    let run = etcd_ca([
        "agent",
        "--once",
        "--renew-now",
        "--server",
        &server.url,
        "--ca-fingerprint",
        &server.fingerprint,
        "--node",
        "n1",
        "--dir",
        pki.to_str().unwrap(),
        "--profiles",
        "server",
    ]);
    assert_eq!(
        run.code,
        Some(0),
        "no token is needed to renew an adopted certificate:\n{}",
        run.stderr
    );
    let new = std::fs::read_to_string(pki.join("server.crt")).unwrap();
    assert_ne!(new, old);
    assert_eq!(
        std::fs::read_to_string(pki.join("server.key")).unwrap(),
        std::fs::read_to_string(legacy.join("server.key")).unwrap()
    );

    let summary = |pem: &str| {
        etcd_ca::pki::CertSummary::from_der(&etcd_ca::pki::pem_certificates(pem).unwrap()[0])
            .unwrap()
    };
    let (before, after) = (summary(&old), summary(&new));
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(after.sans), sorted(before.sans));
    assert_eq!(after.key_type, "rsa");
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(legacy.join("ca.crt"))
        .arg(pki.join("server.crt"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
}
