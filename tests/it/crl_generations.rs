//! During a CA rotation every trusted generation publishes its own CRL, signed by itself and
//! listing what it issued, so RFC 5280 checkers find a CRL for certificates of the retiring
//! generation; etcd's CRL (`/v1/crl`) stays one file listing every revoked serial. CRL numbers of
//! one issuer only go up, whether the server or `etcd-ca crl` built the previous one.

use std::path::Path;
use std::process::Command;

use etcd_ca::client::{ApiClient, Trust};

use crate::helpers::{etcd_ca, require_tool, CaServer};

/// `openssl verify -crl_check` of `cert` against the bundle and these CRLs: (success, output).
fn verify_with_crls(dir: &Path, cert: &Path, crls: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(require_tool("openssl"));
    cmd.current_dir(dir)
        .args(["verify", "-crl_check", "-CAfile", "bundle.pem"]);
    for crl in crls {
        cmd.args(["-CRLfile", crl]);
    }
    let out = cmd.arg(cert).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The CRL number and the revoked serials (lower-case hex) of a DER CRL.
fn crl_contents(der: &[u8]) -> (u64, Vec<String>) {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
    let number = crl
        .crl_number()
        .expect("every CRL carries a number")
        .to_bytes_be()
        .iter()
        .fold(0u64, |n, b| (n << 8) | u64::from(*b));
    let serials = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    (number, serials)
}

async fn get_crl(client: &ApiClient, query: &str) -> Vec<u8> {
    let der = client
        .get(&format!("/v1/crl{query}"))
        .await
        .unwrap()
        .body
        .to_vec();
    etcd_ca::pki::check_crl_der(&der).unwrap();
    der
}

/// The stable code of a refused `GET /v1/crl{query}`.
async fn refusal(client: &ApiClient, query: &str) -> (u16, String) {
    match client.get(&format!("/v1/crl{query}")).await {
        Err(etcd_ca::client::ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("GET /v1/crl{query} was not refused: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trusted_generation_publishes_its_own_crl_during_a_rotation() {
    let server = CaServer::start(&[], &[]);
    let root = server.ca.tmp.path();
    let rotate = |step: &str, extra: &[&str]| {
        let mut args = vec!["ca", "rotate", step];
        args.extend_from_slice(extra);
        server.remote(&args).ok();
    };
    let client_cert = |name: &str| {
        let out = root.join(name);
        let serial = server
            .ca
            .issue(&out, &["--profile", "client", "--node", name, "--cn", name]);
        (serial, out.join("client.crt"))
    };

    // Two clients of generation 1, then generation 2 is trusted and made to sign.
    let (old_serial, old_cert) = client_cert("old");
    let (other_old_serial, _) = client_cert("other-old");
    rotate("start", &[]);
    let bundle_pem =
        String::from_utf8(server.client().get("/v1/ca").await.unwrap().body.to_vec()).unwrap();
    std::fs::write(root.join("bundle.pem"), &bundle_pem).unwrap();
    let bundle = etcd_ca::pki::pem_certificates(&bundle_pem).unwrap();
    assert_eq!(bundle.len(), 2, "old and new generation are trusted");
    let (gen1_fp, gen2_fp) = (
        etcd_ca::pki::fingerprint(&bundle[0]),
        etcd_ca::pki::fingerprint(&bundle[1]),
    );
    assert_eq!(gen1_fp, server.fingerprint);
    rotate("activate", &["--force"]);
    let (_, new_cert) = client_cert("new");
    // The server soon presents a generation 2 certificate: trust the bundle, not the old pin.
    let public = ApiClient::new(&server.url, Trust::Bundle(bundle.clone()), None).unwrap();
    let admin = public.clone().with_bearer(server.admin_token.clone());
    let revoke = |serial: String| {
        let admin = admin.clone();
        async move {
            let _: serde_json::Value = admin
                .post_json(
                    &format!("/v1/certs/{serial}/revoke"),
                    &serde_json::json!({ "reason": "keyCompromise" }),
                )
                .await
                .unwrap();
        }
    };
    revoke(old_serial.clone()).await;

    // Each generation's CRL, by number or by CA fingerprint, signed by that generation.
    let gen1 = get_crl(&public, "?generation=1").await;
    assert_eq!(gen1, get_crl(&public, &format!("?ca={gen1_fp}")).await);
    // Conditional requests work as for etcd's CRL.
    let etag = format!("\"{}\"", etcd_ca::pki::sha256_hex(&gen1));
    let cached = public
        .send(
            hyper::Method::GET,
            "/v1/crl?generation=1",
            None,
            &[(hyper::header::IF_NONE_MATCH, etag)],
        )
        .await
        .unwrap();
    assert_eq!(cached.status, hyper::StatusCode::NOT_MODIFIED);
    // Hex digits in either case.
    let gen2_upper = format!("sha256:{}", gen2_fp["sha256:".len()..].to_uppercase());
    let gen2 = get_crl(&public, &format!("?ca={gen2_upper}")).await;
    assert!(etcd_ca::pki::crl_issued_by(&gen1, &bundle[0]));
    assert!(etcd_ca::pki::crl_issued_by(&gen2, &bundle[1]));
    let (gen1_number, gen1_serials) = crl_contents(&gen1);
    assert_eq!(gen1_serials, [old_serial.as_str()]);
    assert!(
        crl_contents(&gen2).1.is_empty(),
        "generation 2 revoked nothing"
    );
    std::fs::write(root.join("gen1.crl"), &gen1).unwrap();
    std::fs::write(root.join("gen2.crl"), &gen2).unwrap();

    // etcd's CRL is unchanged: one file, every revoked serial, signed by the active generation.
    let etcd_crl = get_crl(&public, "").await;
    assert_eq!(crl_contents(&etcd_crl).1, [old_serial.as_str()]);
    assert!(etcd_ca::pki::crl_issued_by(&etcd_crl, &bundle[1]));
    std::fs::write(root.join("etcd.crl"), &etcd_crl).unwrap();
    // ...which an RFC 5280 checker cannot use for a generation 1 certificate.
    let (ok, out) = verify_with_crls(root, &old_cert, &["etcd.crl"]);
    assert!(
        !ok && out.contains("unable to get certificate CRL"),
        "{out}"
    );

    // With one CRL per generation the old certificate is revoked and the new one is fine.
    let (ok, out) = verify_with_crls(root, &old_cert, &["gen1.crl", "gen2.crl"]);
    assert!(!ok, "{out}");
    assert!(out.contains("certificate revoked"), "{out}");
    assert!(!out.contains("unable to get certificate CRL"), "{out}");
    let (ok, out) = verify_with_crls(root, &new_cert, &["gen1.crl", "gen2.crl"]);
    assert!(ok && out.contains("OK"), "{out}");

    // Generation 1's numbers go up across processes: server, the CLI on the data dir, server.
    let local = root.join("local-gen1.crl");
    let wrote = server
        .ca
        .cli(
            "crl",
            &["--generation", "1", "--out", local.to_str().unwrap()],
        )
        .ok()
        .stdout;
    assert!(wrote.contains("CRL of CA generation 1"), "{wrote}");
    let local = std::fs::read(&local).unwrap();
    assert!(etcd_ca::pki::crl_issued_by(&local, &bundle[0]));
    let (local_number, local_serials) = crl_contents(&local);
    assert_eq!(local_serials, [old_serial.as_str()]);
    assert!(
        local_number > gen1_number,
        "{local_number} after {gen1_number}"
    );
    revoke(other_old_serial.clone()).await;
    let (again_number, mut again_serials) = crl_contents(&get_crl(&public, "?generation=1").await);
    assert!(
        again_number > local_number,
        "{again_number} after {local_number}"
    );
    again_serials.sort();
    let mut expected = vec![old_serial.clone(), other_old_serial];
    expected.sort();
    assert_eq!(again_serials, expected);

    // The CLI fetches a generation's CRL remotely too.
    let remote = root.join("remote-gen2.crl");
    etcd_ca([
        "crl",
        "--server",
        &server.url,
        "--ca-file",
        root.join("bundle.pem").to_str().unwrap(),
        "--generation",
        "2",
        "--out",
        remote.to_str().unwrap(),
    ])
    .ok();
    assert!(etcd_ca::pki::crl_issued_by(
        &std::fs::read(&remote).unwrap(),
        &bundle[1]
    ));

    // Refusals: unknown generation or CA, malformed queries.
    let unknown_ca = format!("sha256:{}", "0".repeat(64));
    for query in [
        "?generation=3",
        "?generation=0",
        &format!("?ca={unknown_ca}"),
    ] {
        assert_eq!(
            refusal(&public, query).await,
            (404, "generation_unknown".into()),
            "{query}"
        );
    }
    for query in [
        "?generation=one",
        "?ca=sha256:abc",
        "?ca=00",
        "?generation=1&generation=2",
        &format!("?generation=1&ca={gen1_fp}"),
        "?issuer=1",
    ] {
        assert_eq!(
            refusal(&public, query).await,
            (400, "query_invalid".into()),
            "{query}"
        );
    }

    // The agent keeps one CRL per CA of its bundle, named by fingerprint, and drops the others.
    let pki = root.join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let stale = pki.join("crl-0123456789abcdef.crl");
    std::fs::write(&stale, b"from a CA long gone").unwrap();
    std::fs::write(pki.join("ca.crl"), &etcd_crl).unwrap();
    let refresh = etcd_ca::agent::crls::refresh_issuer_crls;
    let changed = refresh(&public, &pki, &bundle).await.unwrap();
    let gen1_file = pki.join(format!("crl-{}.crl", &gen1_fp["sha256:".len()..][..16]));
    let gen2_file = pki.join(format!("crl-{}.crl", &gen2_fp["sha256:".len()..][..16]));
    assert_eq!(changed.written, [gen1_file.clone(), gen2_file.clone()]);
    assert_eq!(changed.removed, [stale.as_path()]);
    assert!(!stale.exists());
    assert!(etcd_ca::pki::crl_issued_by(
        &std::fs::read(&gen1_file).unwrap(),
        &bundle[0]
    ));
    assert_eq!(
        std::fs::read(pki.join("ca.crl")).unwrap(),
        etcd_crl,
        "etcd's CRL is not ours to touch"
    );
    let unchanged = refresh(&public, &pki, &bundle).await.unwrap();
    assert_eq!(unchanged, Default::default(), "nothing changed: 304s");

    // Once generation 1 is retired it has no CRL; the agent's file goes with the new bundle.
    rotate("finish", &["--force"]);
    assert_eq!(
        refusal(&public, "?generation=1").await,
        (404, "generation_unknown".into())
    );
    let stale_bundle = refresh(&public, &pki, &bundle).await.unwrap();
    assert!(
        stale_bundle.removed.is_empty() && gen1_file.exists(),
        "skipped, not an error"
    );
    let new_bundle = &bundle[1..];
    let changed = refresh(&public, &pki, new_bundle).await.unwrap();
    assert_eq!(changed.removed, [gen1_file.as_path()]);
    assert!(gen2_file.exists());
}

/// The server serves the CRL it published, byte for byte, across a restart (a second server on
/// the same database would too) until a revocation calls for a new one, numbered higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_serves_the_crl_it_published_until_a_revocation() {
    let mut server = crate::helpers::CaServer::start(&[], &[]);
    let number = |der: &[u8]| etcd_ca::pki::crl_contents(der).unwrap().1.number.unwrap();
    let first = server.client().crl(None).await.unwrap();
    server.restart();
    assert_eq!(
        server.client().crl(None).await.unwrap(),
        first,
        "the same bytes"
    );

    let out = server.ca.tmp.path().join("gone");
    let serial = server.remote_issue_client(&out, "gone");
    server
        .remote(&["revoke", &serial, "--reason", "keyCompromise"])
        .ok();
    let second = server.client().crl(None).await.unwrap();
    assert!(number(&second) > number(&first));
    let (_, contents) = etcd_ca::pki::crl_contents(&second).unwrap();
    assert!(contents.revoked.iter().any(|(s, _, _)| *s == serial));
    server.restart();
    assert_eq!(server.client().crl(None).await.unwrap(), second);
}
