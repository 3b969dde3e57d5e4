//! CSRs the way nodes make them today: openssl (with extra requested extensions), cfssl (Go's
//! x509.CreateCertificateRequest) and rcgen. Each returns (CSR PEM, private key PEM).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::helpers::require_tool;

/// openssl req with a P-256 key, the SANs given, and a subjectKeyIdentifier extension request.
pub fn openssl(dir: &Path, name: &str, sans: &[&str]) -> (String, String) {
    let key = dir.join(format!("{name}.openssl.key"));
    let csr = dir.join(format!("{name}.openssl.csr"));
    let san_ext = sans
        .iter()
        .map(|s| {
            if s.parse::<std::net::IpAddr>().is_ok() {
                format!("IP:{s}")
            } else {
                format!("DNS:{s}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut cmd = Command::new(require_tool("openssl"));
    cmd.args([
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&csr)
    .args([
        "-subj",
        "/CN=whatever-the-node-says",
        "-addext",
        "subjectKeyIdentifier=hash",
    ]);
    if !sans.is_empty() {
        cmd.args(["-addext", &format!("subjectAltName={san_ext}")]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        std::fs::read_to_string(csr).unwrap(),
        std::fs::read_to_string(key).unwrap(),
    )
}

/// openssl with an arbitrary key generation (e.g. a curve etcd-ca does not support).
pub fn openssl_with_key(dir: &Path, name: &str, keygen: &[&str]) -> String {
    let key = dir.join(format!("{name}.key"));
    let mut gen = Command::new(require_tool("openssl"));
    gen.args(keygen).arg("-out").arg(&key);
    assert!(gen.status().unwrap().success());
    let out = Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(&key)
        .args(["-subj", "/CN=x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// cfssl genkey: what cfssl recipes and Go programs produce.
pub fn cfssl(cn: &str, hosts: &[&str]) -> (String, String) {
    let request = serde_json::json!({
        "CN": cn,
        "hosts": hosts,
        "key": {"algo": "ecdsa", "size": 256},
    });
    let mut child = Command::new(require_tool("cfssl"))
        .args(["genkey", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        answer["csr"].as_str().unwrap().to_string(),
        answer["key"].as_str().unwrap().to_string(),
    )
}

/// rcgen, in process.
pub fn rcgen(sans: &[&str], key_type: etcd_ca::pki::KeyType) -> (String, String) {
    let key = key_type.generate().unwrap();
    let params =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key.serialize_pem())
}
