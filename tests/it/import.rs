//! Adopting the CA that today's recipes built (openssl, kubeadm, cfssl): PKCS#8, SEC1 and
//! PKCS#1 keys; leaves issued afterwards verify against the untouched original ca.crt.

use std::path::Path;
use std::process::Command;

use crate::helpers::{etcd_ca, openssl, snapshot, TestCa};

/// A self-signed CA made by openssl with the given key generation command.
fn openssl_ca(dir: &Path, keygen: &[&str], subject: &str) {
    openssl(dir, keygen);
    openssl(
        dir,
        &[
            "req", "-x509", "-new", "-key", "ca.key", "-subj", subject, "-days", "3650", "-out",
            "ca.crt",
        ],
    );
}

fn adopt_and_issue(keygen: &[&str], key_label: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = tmp.path().join("legacy");
    std::fs::create_dir(&legacy).unwrap();
    // O= and a PrintableString-friendly subject, like cfssl and kubeadm write.
    openssl_ca(&legacy, keygen, "/O=example/CN=etcd-ca");
    let key_text = std::fs::read_to_string(legacy.join("ca.key")).unwrap();
    assert!(
        key_text.contains(key_label),
        "expected a {key_label} key, got:\n{key_text}"
    );

    let data = tmp.path().join("ca");
    let run = etcd_ca([
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--import-cert",
        legacy.join("ca.crt").to_str().unwrap(),
        "--import-key",
        legacy.join("ca.key").to_str().unwrap(),
    ])
    .ok();
    assert!(run.stdout.contains("Adopted CA"), "{}", run.stdout);
    assert!(run.stdout.contains("O=example"), "{}", run.stdout);

    let out = tmp.path().join("out");
    etcd_ca([
        "issue",
        "--data-dir",
        data.to_str().unwrap(),
        "--profile",
        "server",
        "--node",
        "n1",
        "--ip",
        "10.0.0.11",
        "--out",
        out.to_str().unwrap(),
    ])
    .ok();
    // The leaf chains to the original file, byte-identical to what the cluster already trusts.
    let verified = openssl(
        tmp.path(),
        &[
            "verify",
            "-CAfile",
            legacy.join("ca.crt").to_str().unwrap(),
            "-purpose",
            "sslserver",
            out.join("server.crt").to_str().unwrap(),
        ],
    );
    assert!(verified.contains(": OK"), "{verified}");
    let bundle = std::fs::read_to_string(out.join("ca.crt")).unwrap();
    assert!(!bundle.contains('\r'), "PEM files use LF line endings");
    assert_eq!(
        etcd_ca::pki::pem_certificates(&bundle).unwrap(),
        etcd_ca::pki::pem_certificates(&std::fs::read_to_string(legacy.join("ca.crt")).unwrap())
            .unwrap(),
        "the trust bundle is exactly the adopted CA certificate"
    );
    // The CRL verifies too.
    let crl = out.join("ca.crl");
    etcd_ca([
        "crl",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        crl.to_str().unwrap(),
    ])
    .ok();
    let text = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-in"])
        .arg(&crl)
        .arg("-CAfile")
        .arg(legacy.join("ca.crt"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stderr).contains("verify OK"),
        "{text:?}"
    );
}

#[test]
fn adopts_an_ecdsa_ca_with_a_sec1_key() {
    adopt_and_issue(
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
        "BEGIN EC PRIVATE KEY",
    );
}

#[test]
fn adopts_an_rsa_ca_with_a_pkcs1_key() {
    adopt_and_issue(
        &["genrsa", "-traditional", "-out", "ca.key", "2048"],
        "BEGIN RSA PRIVATE KEY",
    );
}

#[test]
fn adopts_a_p384_ca_with_a_pkcs8_key() {
    adopt_and_issue(
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
            "ca.key",
        ],
        "BEGIN PRIVATE KEY",
    );
}

#[test]
fn refuses_a_key_that_does_not_match_and_a_certificate_that_is_not_a_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let legacy = tmp.path();
    openssl_ca(
        legacy,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ],
        "/CN=etcd-ca",
    );
    openssl(
        legacy,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "other.key",
        ],
    );
    let data = legacy.join("ca");
    let err = etcd_ca([
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--import-cert",
        legacy.join("ca.crt").to_str().unwrap(),
        "--import-key",
        legacy.join("other.key").to_str().unwrap(),
    ])
    .fails();
    assert!(
        err.contains("the private key does not belong to the certificate"),
        "{err}"
    );
    assert!(!data.exists());

    // A leaf certificate is not a CA.
    let ca = TestCa::init(&[]);
    let out = ca.tmp.path().join("out");
    ca.issue(
        &out,
        &["--profile", "peer", "--node", "n1", "--ip", "10.0.0.1"],
    );
    let before = snapshot(ca.tmp.path());
    let err = etcd_ca([
        "init",
        "--data-dir",
        data.to_str().unwrap(),
        "--import-cert",
        out.join("peer.crt").to_str().unwrap(),
        "--import-key",
        out.join("peer.key").to_str().unwrap(),
    ])
    .fails();
    assert!(err.contains("not a CA"), "{err}");
    assert!(!data.exists());
    assert_eq!(snapshot(ca.tmp.path()), before);
}
