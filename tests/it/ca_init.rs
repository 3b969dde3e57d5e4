//! `etcd-ca init` creates a CA etcd accepts: CA:TRUE, keyCertSign + cRLSign, no EKU, a private key
//! only its owner can read, for every supported key type.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::helpers::{require_tool, TestCa};

#[test]
fn every_key_type_makes_a_ca_whose_leaves_verify() {
    for key_type in ["ecdsa-p256", "ecdsa-p384", "ed25519"] {
        let ca = TestCa::init(&["--key-type", key_type, "--validity", "5y"]);
        let key = ca.dir.join("ca/gen-1.key");
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(&ca.dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let pem = std::fs::read_to_string(ca.dir.join("ca/gen-1.crt")).unwrap();
        let der = etcd_ca::pki::pem_certificates(&pem).unwrap().remove(0);
        let cert = etcd_ca::pki::parse_certificate(&der).unwrap();
        assert!(cert.is_ca(), "{key_type}");
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign(), "{key_type}");
        assert!(
            cert.extended_key_usage().unwrap().is_none(),
            "a CA carries no EKU"
        );
        let summary = etcd_ca::pki::CertSummary::from_der(&der).unwrap();
        assert_eq!(summary.key_type, key_type);
        let years = (summary.not_after - summary.not_before).whole_days() / 365;
        assert_eq!(years, 5, "{key_type}");

        let out = ca.tmp.path().join("out");
        ca.issue(
            &out,
            &["--profile", "server", "--node", "n1", "--ip", "10.0.0.1"],
        );
        let verify = Command::new(require_tool("openssl"))
            .args(["verify", "-CAfile"])
            .arg(out.join("ca.crt"))
            .arg(out.join("server.crt"))
            .output()
            .unwrap();
        assert!(verify.status.success(), "{key_type}: {verify:?}");
    }
}
