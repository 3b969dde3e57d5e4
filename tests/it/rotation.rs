//! CA rotation on a live cluster: start, activate, finish, with the agents restarting members
//! one at a time under the restart lease, while a client writes numbered keys through every
//! endpoint (retrying across endpoints, like kube-apiserver) and a sampler watches every
//! member's health.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{
    etcd_ca, etcdctl, https_post_json, require_tool, tls_client_config, tls_connect,
    try_tls_client_config, wait_for, AgentProcess, CaServer, ClientCreds, EtcdCluster, Ports,
};

const PORTS: Ports = Ports {
    client: 22679,
    peer: 22680,
};
const CA_PORT: u16 = 22681;

/// Members started by per-member scripts: running a member's script again restarts it, the
/// way `systemctl restart etcd` would.
struct ScriptedCluster {
    scripts: Vec<PathBuf>,
    pidfiles: Vec<PathBuf>,
}

impl ScriptedCluster {
    fn start(dir: &Path, pki: &[PathBuf; 3], creds: &ClientCreds) -> Self {
        let etcd = require_tool("etcd");
        let initial_cluster = (1..=3)
            .map(|m| format!("n{m}=https://127.0.0.1{m}:{}", PORTS.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut scripts = Vec::new();
        let mut pidfiles = Vec::new();
        for (i, pki_dir) in pki.iter().enumerate() {
            let m = i + 1;
            let ip = EtcdCluster::ip(m);
            let tls = etcd_ca([
                "etcd-flags",
                "--node",
                &format!("n{m}"),
                "--dir",
                pki_dir.to_str().unwrap(),
            ])
            .ok()
            .stdout
            .replace(['\\', '\n'], " ");
            let pidfile = dir.join(format!("n{m}.pid"));
            let script = dir.join(format!("member-n{m}.sh"));
            std::fs::write(
                &script,
                format!(
                    r#"#!/bin/sh
# Starts member n{m}, or restarts it if it runs.
state=new
if [ -f {pid} ] && kill -0 "$(cat {pid})" 2>/dev/null; then
  kill "$(cat {pid})"
  while kill -0 "$(cat {pid})" 2>/dev/null; do sleep 0.1; done
  state=existing
fi
[ -d {data} ] && state=existing
nohup {etcd} {tls} --data-dir {data} --logger=zap --log-outputs=stderr \
  --listen-client-urls https://{ip}:{cp} --advertise-client-urls https://{ip}:{cp} \
  --listen-peer-urls https://{ip}:{pp} --initial-advertise-peer-urls https://{ip}:{pp} \
  --initial-cluster {ic} --initial-cluster-token rotation --initial-cluster-state $state \
  >> {log} 2>&1 < /dev/null &
echo $! > {pid}
"#,
                    pid = pidfile.display(),
                    data = dir.join(format!("n{m}.data")).display(),
                    log = dir.join(format!("n{m}.log")).display(),
                    cp = PORTS.client,
                    pp = PORTS.peer,
                    ic = initial_cluster,
                ),
            )
            .unwrap();
            scripts.push(script);
            pidfiles.push(pidfile);
        }
        let cluster = Self { scripts, pidfiles };
        for script in &cluster.scripts {
            assert!(Command::new("sh").arg(script).status().unwrap().success());
        }
        wait_for("the cluster to be healthy", Duration::from_secs(60), || {
            etcdctl(&endpoints(), creds, &["endpoint", "health"]).code == Some(0)
        });
        cluster
    }
}

impl Drop for ScriptedCluster {
    fn drop(&mut self) {
        for pidfile in &self.pidfiles {
            if let Ok(pid) = std::fs::read_to_string(pidfile) {
                let kill = |args: &[&str]| {
                    Command::new("kill")
                        .args(args)
                        .stderr(std::process::Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                };
                kill(&[pid.trim()]);
                let deadline = Instant::now() + Duration::from_secs(10);
                while kill(&["-0", pid.trim()]) {
                    if Instant::now() > deadline {
                        kill(&["-9", pid.trim()]);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

fn endpoints() -> String {
    (1..=3)
        .map(|m| format!("https://127.0.0.1{m}:{}", PORTS.client))
        .collect::<Vec<_>>()
        .join(",")
}

fn addr(member: usize) -> SocketAddr {
    SocketAddr::new(EtcdCluster::ip(member), PORTS.client)
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// True when the member answers at all (GET /version over TLS). /health would also say false
/// while a surviving member waits out an election after the leader restarted.
fn up(member: usize, creds: &ClientCreds) -> bool {
    // While the client's own files are being replaced, try again rather than call it down.
    let config = loop {
        match try_tls_client_config(&creds.ca, creds) {
            Some(c) => break c,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let Ok(mut stream) = tls_connect(addr(member), EtcdCluster::ip(member), config) else {
        return false;
    };
    use std::io::{Read, Write};
    let request = "GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains("etcdserver")
}

fn status(server: &CaServer) -> Value {
    let run = etcd_ca([
        "ca",
        "rotate",
        "status",
        "--data-dir",
        server.ca.data_dir(),
        "--json",
    ])
    .ok();
    serde_json::from_str(&run.stdout).unwrap()
}

fn converged(server: &CaServer) -> bool {
    status(server)["blocked_by"]
        .as_array()
        .is_some_and(|b| b.is_empty())
}

fn served_issuer_is(
    member_addr: SocketAddr,
    ip: IpAddr,
    creds: &ClientCreds,
    ca_der: &[u8],
) -> bool {
    let Ok(stream) = tls_connect(member_addr, ip, tls_client_config(&creds.ca, Some(creds))) else {
        return false;
    };
    let der = stream.conn.peer_certificates().unwrap()[0].to_vec();
    let cert = etcd_ca::pki::parse_certificate(&der).unwrap();
    etcd_ca::pki::is_issued_by(&cert, ca_der)
}

#[test]
fn the_ca_rotates_with_rolling_restarts_while_the_cluster_keeps_serving() {
    let listen = format!("127.0.0.1:{CA_PORT}");
    let server = CaServer::start(&[], &["--listen", &listen]);
    let root = server.ca.tmp.path().to_path_buf();
    let pki: [PathBuf; 3] = [1, 2, 3].map(|m| root.join(format!("pki-n{m}")));
    let scripts: Vec<PathBuf> = (1..=3)
        .map(|m| root.join(format!("member-n{m}.sh")))
        .collect();

    let mut agents = Vec::new();
    for (i, dir) in pki.iter().enumerate() {
        let m = i + 1;
        let node = format!("n{m}");
        let ip = format!("127.0.0.1{m}");
        let token = server.ca.token(&[
            "--node",
            &node,
            "--ip",
            &ip,
            "--ip",
            "127.0.0.1",
            "--profiles",
            "server,peer",
        ]);
        let endpoint = format!("https://{ip}:{}", PORTS.client);
        let hook = format!("sh {}", scripts[i].display());
        agents.push(AgentProcess::spawn(
            &[
                "--server",
                &server.url,
                "--ca-fingerprint",
                &server.fingerprint,
                "--node",
                &node,
                "--dir",
                dir.to_str().unwrap(),
                "--token",
                &token,
                "--refresh-interval",
                "2s",
                "--backoff",
                "500ms",
                "--backoff-max",
                "3s",
                "--on-trust-change",
                &hook,
                "--etcd-endpoint",
                &endpoint,
            ],
            root.join(format!("agent-{node}.log")),
            root.join(format!("hooks-{node}.log")),
        ));
    }
    wait_for("every agent to enroll", Duration::from_secs(30), || {
        pki.iter()
            .all(|d| d.join("ca.crl").exists() && d.join("peer.crt").exists())
    });
    let ops_dir = root.join("ops");
    server.ca.issue(
        &ops_dir,
        &["--profile", "client", "--node", "ops", "--cn", "ops"],
    );
    let ops = ClientCreds::in_dir(&ops_dir);
    let cluster = ScriptedCluster::start(&root, &pki, &ops);
    let pids = |c: &ScriptedCluster| -> Vec<String> {
        c.pidfiles
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    };
    let first_pids = pids(&cluster);

    // A client writing numbered keys, retrying across endpoints; a sampler watching health.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let writer = {
        let (stop, acked, ops) = (stop.clone(), acked.clone(), ops.clone());
        std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = format!(
                    "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                    b64(&format!("rot/{i:06}")),
                    b64(&i.to_string())
                );
                for attempt in 0..60 {
                    let m = (i + attempt) % 3 + 1;
                    let put = try_tls_client_config(&ops.ca, &ops)
                        .ok_or_else(|| "client files being replaced".to_string())
                        .and_then(|config| tls_connect(addr(m), EtcdCluster::ip(m), config))
                        .map(|s| https_post_json(s, "etcd", "/v3/kv/put", &body));
                    if matches!(put, Ok((200, _))) {
                        acked.lock().unwrap().push(i);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let max_down = Arc::new(AtomicUsize::new(0));
    let ever_down = Arc::new(Mutex::new(BTreeSet::<usize>::new()));
    let sampler = {
        let (stop, max_down, ever_down, ops) = (
            stop.clone(),
            max_down.clone(),
            ever_down.clone(),
            ops.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let down: Vec<usize> = (1..=3).filter(|m| !up(*m, &ops)).collect();
                max_down.fetch_max(down.len(), Ordering::Relaxed);
                ever_down.lock().unwrap().extend(down);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };

    // 1. start: the bundle holds both CAs; members restart one at a time to trust it.
    etcd_ca(["ca", "rotate", "start", "--data-dir", server.ca.data_dir()]).ok();
    let early = etcd_ca([
        "ca",
        "rotate",
        "activate",
        "--data-dir",
        server.ca.data_dir(),
    ])
    .fails();
    assert!(early.contains("have not converged"), "{early}");
    assert!(
        ["n1", "n2", "n3"].iter().any(|n| early.contains(n)),
        "the refusal names the lagging nodes: {early}"
    );
    wait_for(
        "every member to restart trusting both CAs",
        Duration::from_secs(120),
        || converged(&server),
    );
    // The client trusts both too before anything is signed by the new CA (as its operator would).
    server.ca.issue(
        &ops_dir,
        &["--profile", "client", "--node", "ops", "--cn", "ops"],
    );
    let old_ops_dir = root.join("ops-old-ca");
    server.ca.issue(
        &old_ops_dir,
        &["--profile", "client", "--node", "ops-old", "--cn", "ops"],
    );

    // 2. activate: agents re-issue from the new CA; no restart needed.
    etcd_ca([
        "ca",
        "rotate",
        "activate",
        "--data-dir",
        server.ca.data_dir(),
    ])
    .ok();
    let early = etcd_ca(["ca", "rotate", "finish", "--data-dir", server.ca.data_dir()]).fails();
    assert!(early.contains("have not converged"), "{early}");
    server.ca.issue(
        &ops_dir,
        &["--profile", "client", "--node", "ops", "--cn", "ops"],
    );
    let retire_old_client = etcd_ca(["ca", "rotate", "status", "--data-dir", server.ca.data_dir()])
        .ok()
        .stdout;
    assert!(retire_old_client.contains("ops-old"), "{retire_old_client}");
    wait_for(
        "every member to hold certificates from the new CA",
        Duration::from_secs(60),
        || {
            status(&server)["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["member"] == true)
                .all(|n| n["waiting_for"].is_null())
        },
    );

    // 3. finish (forced past the old-CA client we keep to prove it gets refused).
    etcd_ca([
        "ca",
        "rotate",
        "finish",
        "--data-dir",
        server.ca.data_dir(),
        "--force",
    ])
    .ok();
    let new_id = status(&server)["active"]["id"].as_i64().unwrap();
    wait_for(
        "every member to restart trusting only the new CA",
        Duration::from_secs(120),
        || {
            status(&server)["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["member"] == true)
                .all(|n| n["running_bundle"] == serde_json::json!([new_id]))
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    sampler.join().unwrap();

    // At no moment were two members down at once; every member did restart.
    assert!(
        max_down.load(Ordering::Relaxed) <= 1,
        "two members were down at once"
    );
    for (before, after) in first_pids.iter().zip(pids(&cluster)) {
        assert_ne!(*before, after, "every member was restarted");
    }
    let seen_down = ever_down.lock().unwrap().len();

    // Every acknowledged write is there.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let listing = etcdctl(
        &endpoints(),
        &ops,
        &["get", "rot/", "--prefix", "--keys-only"],
    )
    .ok()
    .stdout;
    let present: BTreeSet<&str> = listing.lines().filter(|l| !l.is_empty()).collect();
    for i in &acked {
        assert!(
            present.contains(format!("rot/{i:06}").as_str()),
            "acknowledged write {i} is missing"
        );
    }

    // Everything comes from the new CA; every trust file holds only it.
    let new_ca =
        std::fs::read_to_string(server.ca.dir.join(format!("ca/gen-{new_id}.crt"))).unwrap();
    let new_der = etcd_ca::pki::pem_certificates(&new_ca).unwrap().remove(0);
    for (i, dir) in pki.iter().enumerate() {
        let bundle =
            etcd_ca::pki::pem_certificates(&std::fs::read_to_string(dir.join("ca.crt")).unwrap())
                .unwrap();
        assert_eq!(bundle, vec![new_der.clone()], "n{}'s ca.crt", i + 1);
        let m = i + 1;
        for port in [PORTS.client, PORTS.peer] {
            assert!(
                served_issuer_is(
                    SocketAddr::new(EtcdCluster::ip(m), port),
                    EtcdCluster::ip(m),
                    &ops,
                    &new_der
                ),
                "n{m} port {port}"
            );
        }
    }

    // A client certificate from the old CA is refused; one from the new CA works.
    let mut old_client = ClientCreds::in_dir(&old_ops_dir);
    old_client.ca = ops.ca.clone();
    etcdctl(&endpoints(), &old_client, &["get", "rot/000000"]).fails();
    etcdctl(&endpoints(), &ops, &["get", "rot/000000"]).ok();

    for agent in agents {
        let restarts = agent
            .log_text()
            .matches("member restarted with the new trust bundle")
            .count();
        assert_eq!(restarts, 2, "{}", agent.log_text());
        assert_eq!(agent.stop(), Some(0));
    }
    eprintln!(
        "rotation: {} writes acknowledged, {seen_down} members seen down (one at a time)",
        acked.len()
    );
    drop(cluster);
}
