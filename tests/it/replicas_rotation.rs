//! A CA rotation on three CA servers that share a PostgreSQL database: each step is sent to a
//! different server while another one is killed, the agents know all three (`--server
//! A,B,C`), and a three-member etcd cluster keeps serving throughout, one member restarting at
//! a time under the restart lease the servers share. After `finish`, every agent renews from
//! the new CA. (PostgreSQL on 22904, CA servers on 22941-22943, etcd on 22959/22960.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{etcdctl, wait_for, CaServer, ClientCreds, Ports};
use crate::postgres_server::PgServer;
use crate::rotation::{endpoints, member_agents, serial_of, up, within, Admin, ScriptedCluster};

#[test]
fn a_rotation_with_each_step_on_another_server_and_one_server_killed_per_phase() {
    let ports = Ports {
        client: 22959,
        peer: 22960,
    };
    let pg = PgServer::start(22904);
    pg.create_database("ca");
    let url = pg.url("ca");
    let mut replicas: Vec<CaServer> = [22941, 22942, 22943]
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let listen = format!("127.0.0.1:{port}");
            CaServer::start_shared(&url, i == 0, &["--listen", &listen])
        })
        .collect();
    let servers = replicas
        .iter()
        .map(|r| r.url.clone())
        .collect::<Vec<_>>()
        .join(",");
    let pin = replicas[0].fingerprint.clone();
    let token_file = replicas[0].admin_token_file.clone();
    let admin_at = |i: usize, replicas: &[CaServer]| Admin {
        url: replicas[i].url.clone(),
        pin: pin.clone(),
        token_file: token_file.clone(),
    };
    let root = replicas[0].ca.tmp.path().to_path_buf();
    let pki: [PathBuf; 3] = [1, 2, 3].map(|m| root.join(format!("pki-n{m}")));

    let agents = member_agents(&admin_at(0, &replicas), &servers, &pki, ports, &root);
    wait_for("every agent to enroll", Duration::from_secs(30), || {
        pki.iter()
            .all(|d| d.join("ca.crl").exists() && d.join("peer.crt").exists())
    });
    let ops_dir = root.join("ops");
    admin_at(0, &replicas).issue_client(&ops_dir, "ops", "ops");
    let ops = ClientCreds::in_dir(&ops_dir);
    let cluster = ScriptedCluster::start(&root, &pki, &ops, ports);

    let stop = Arc::new(AtomicBool::new(false));
    let max_down = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_down, ops) = (stop.clone(), max_down.clone(), ops.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let down = (1..=3).filter(|m| !up(*m, &ops, ports)).count();
                max_down.fetch_max(down, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let members = |admin: &Admin, check: &dyn Fn(&serde_json::Value) -> bool| {
        admin.status()["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["member"] == true)
            .all(check)
    };

    // Each step through another server, with a third one dead while the phase runs.
    for (step, via, victim) in [("start", 0, 1), ("activate", 1, 2), ("finish", 2, 0)] {
        replicas[victim].kill();
        let admin = admin_at(via, &replicas);
        admin.rotate(step).ok();
        if step == "activate" {
            // The operator's own client certificate, which has no agent.
            admin.issue_client(&ops_dir, "ops", "ops");
        }
        let done = match step {
            "start" => within(
                "every member to restart trusting both CAs",
                Duration::from_secs(180),
                || members(&admin, &|n| n["waiting_for"].is_null()),
            ),
            "activate" => within(
                "every agent to hold certificates from the new CA",
                Duration::from_secs(90),
                || admin.blocked_by().is_empty(),
            ),
            _ => within(
                "every member to restart trusting only the new CA",
                Duration::from_secs(180),
                || members(&admin, &|n| n["running_bundle"] == serde_json::json!([2])),
            ),
        };
        eprintln!("{step} through server {via}, server {victim} dead: {done:?}");
        replicas[victim].start_again();
        if step == "activate" {
            // The restarted server serves a certificate of the new generation.
            assert_eq!(
                admin_at(victim, &replicas).status()["active"]["id"],
                serde_json::json!(2)
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert!(
        max_down.load(Ordering::Relaxed) <= 1,
        "two members were down at once"
    );
    etcdctl(&endpoints(ports), &ops, &["put", "after", "rotation"]).ok();

    // Every agent renews from the new CA, through whichever server answers.
    let new_ca = std::fs::read_to_string(pki[0].join("ca.crt")).unwrap();
    let new_der = etcd_ca::pki::pem_certificates(&new_ca).unwrap();
    assert_eq!(new_der.len(), 1, "only the new CA is trusted");
    replicas[1].kill();
    for (agent, dir) in agents.iter().zip(&pki) {
        let cert = dir.join("server.crt");
        let before = serial_of(&cert);
        let renewals = agent.hook_count("renew");
        agent.signal("-HUP");
        wait_for("a forced renewal", Duration::from_secs(30), || {
            agent.hook_count("renew") > renewals && serial_of(&cert) != before
        });
        let pem = std::fs::read_to_string(&cert).unwrap();
        let der = etcd_ca::pki::pem_certificates(&pem).unwrap().remove(0);
        let parsed = etcd_ca::pki::parse_certificate(&der).unwrap();
        assert!(etcd_ca::pki::is_issued_by(&parsed, &new_der[0]));
        let trusted = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
        assert_eq!(etcd_ca::pki::pem_certificates(&trusted).unwrap(), new_der);
    }
    for agent in agents {
        assert_eq!(agent.stop(), Some(0));
    }
    drop(cluster);
    for r in replicas.iter_mut() {
        r.stop();
    }
}
