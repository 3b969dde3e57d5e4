//! CA rotation: a new generation is introduced (`next`: trusted, not signing), activated (it
//! signs; the old one stays trusted while it retires), then the old one is retired (no longer
//! trusted). Each step refuses while a registered node has not converged on the previous one,
//! and names the nodes, unless forced.
//!
//! The phase is derived from the generations, never stored twice:
//! idle = one active; started = active + a `next` never activated; activated = active + a `next`
//! that was active before (the retiring one).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use super::{ca, AuditAction, Authority, AuthorityError, DataDir, Fault};
use crate::duration::rfc3339;
use crate::fsutil::{self, FsError};
use crate::pki::{self, KeyType};
use crate::store::{AuditEvent, BundleReport, GenerationRecord, GenerationState, NodeReport};

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// One generation, signing.
    Idle,
    /// A new generation is trusted but not signing yet: members restart to trust it.
    Started,
    /// The new generation signs; the old one is still trusted while certificates are re-issued.
    Activated,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Idle => "idle",
            Phase::Started => "started",
            Phase::Activated => "activated",
        })
    }
}

/// A generation as rotation status shows it.
#[derive(Clone, Debug, Serialize)]
pub struct GenerationView {
    pub id: i64,
    pub fingerprint: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
}

impl From<&GenerationRecord> for GenerationView {
    fn from(g: &GenerationRecord) -> Self {
        Self {
            id: g.id,
            fingerprint: g.fingerprint.clone(),
            not_after: g.not_after,
        }
    }
}

/// One node's state in a rotation.
#[derive(Clone, Debug, Serialize)]
pub struct NodeView {
    pub node: String,
    /// Runs etcd (holds a server or peer certificate), so it restarts to trust a new CA.
    pub member: bool,
    /// Generations in the bundle its agent installed / etcd was restarted with (None: no agent
    /// report).
    pub installed_bundle: Option<Vec<i64>>,
    pub running_bundle: Option<Vec<i64>>,
    /// For each profile, the generation that signed its newest valid certificate.
    pub certificates: BTreeMap<String, i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub reported_at: Option<OffsetDateTime>,
    /// Its agent has not reported since the last rotation step: its columns may be out of date.
    pub stale: bool,
    /// What it still has to do before the next step, if anything.
    pub waiting_for: Option<String>,
}

/// The last rotation step taken, and when.
#[derive(Clone, Debug, Serialize)]
pub struct LastStep {
    /// `start`, `activate`, `finish` or `abort`.
    pub step: &'static str,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// What it did, in a sentence.
    pub outcome: String,
}

/// The whole picture `etcd-ca ca rotate status` prints.
#[derive(Clone, Debug, Serialize)]
pub struct RotationStatus {
    pub phase: Phase,
    pub active: GenerationView,
    /// The generation being introduced (started) or retired (activated).
    pub other: Option<GenerationView>,
    pub nodes: Vec<NodeView>,
    /// The next step, and the nodes it waits for.
    pub next_step: Option<&'static str>,
    pub blocked_by: Vec<String>,
    /// Who holds the restart lease, and until when.
    pub restart_lease: Option<(String, String)>,
    /// The last step of this or the previous rotation (none before the first rotation).
    pub last_step: Option<LastStep>,
}

/// The last rotation step, derived from the generations' timestamps.
fn last_step(generations: &[GenerationRecord]) -> Option<LastStep> {
    let mut steps = Vec::new();
    for g in generations {
        if g.id > 1 {
            steps.push(LastStep {
                step: "start",
                at: g.created_at,
                outcome: format!("generation {} introduced, trusted but not signing", g.id),
            });
        }
        if let (Some(at), true) = (g.activated_at, g.id > 1) {
            steps.push(LastStep {
                step: "activate",
                at,
                outcome: format!("generation {} signs", g.id),
            });
        }
        if let Some(at) = g.retired_at {
            steps.push(match g.activated_at {
                Some(_) => LastStep {
                    step: "finish",
                    at,
                    outcome: format!("generation {} retired; the rotation finished", g.id),
                },
                None => LastStep {
                    step: "abort",
                    at,
                    outcome: format!(
                        "generation {} retired before it signed; the rotation was aborted",
                        g.id
                    ),
                },
            });
        }
    }
    // Steps in one transaction share a time: the later step in the list wins.
    steps
        .into_iter()
        .reduce(|a, b| if b.at >= a.at { b } else { a })
}

/// How long a restart lease lasts unless returned (an agent that died loses it).
pub const LEASE_TTL: Duration = Duration::from_secs(120);

use super::SERVER_NODE;
use crate::policy::is_member_profile;

impl Authority {
    /// The phase, the active generation and the other non-retired one, if any.
    pub fn rotation_phase(
        &self,
    ) -> Result<(Phase, GenerationRecord, Option<GenerationRecord>), AuthorityError> {
        let generations = self.generations();
        let active = self.active_generation()?;
        let other = generations
            .iter()
            .find(|g| g.state == GenerationState::Next)
            .cloned();
        let phase = match &other {
            None => Phase::Idle,
            Some(g) if g.activated_at.is_some() => Phase::Activated,
            Some(_) => Phase::Started,
        };
        Ok((phase, active, other))
    }

    /// Every node's state and what blocks the next step.
    pub async fn rotation_status(
        &self,
        now: OffsetDateTime,
    ) -> Result<RotationStatus, AuthorityError> {
        let (phase, active, other) = self.rotation_phase()?;
        let generations = self.generations();
        let last = last_step(&generations);
        let generation_of = |fingerprint: &String| {
            generations
                .iter()
                .find(|g| &g.fingerprint == fingerprint)
                .map(|g| g.id)
                .unwrap_or(0)
        };
        let reports: BTreeMap<String, BundleReport> = self
            .store
            .bundle_reports()
            .await?
            .into_iter()
            .map(|r| (r.node.clone(), r))
            .collect();
        let mut certificates: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for c in self.store.current_certificates(now).await? {
            if c.node != SERVER_NODE {
                certificates
                    .entry(c.node)
                    .or_default()
                    .insert(c.profile, c.ca_generation);
            }
        }
        let mut nodes = Vec::new();
        for (node, certs) in certificates {
            let member = certs.keys().any(|p| is_member_profile(p));
            let report = reports.get(&node);
            let installed: Option<Vec<i64>> =
                report.map(|r| r.installed_bundle.iter().map(generation_of).collect());
            // What etcd was started with: a client's agent restarts nothing, so it has none.
            let running: Option<Vec<i64>> = report
                .filter(|_| member)
                .map(|r| r.running_bundle.iter().map(generation_of).collect());
            // Only nodes with an agent report; a member without one is stale too (it needs one),
            // a client without one is the admin's to update.
            let stale = match (&last, report) {
                (Some(step), Some(r)) => r.reported_at < step.at,
                (Some(_), None) => member,
                (None, _) => false,
            };
            let waiting_for = match (phase, &other) {
                (Phase::Started, Some(new)) if member => match &running {
                    None => {
                        Some("an agent report: none received (is its agent running?)".to_string())
                    }
                    Some(r) if !r.contains(&new.id) => Some(format!(
                        "a restart trusting generation {} (etcd runs with {:?})",
                        new.id, r
                    )),
                    _ => None,
                },
                // A client with an agent must hold the new CA before the server (and members)
                // present certificates from it. Clients without an agent are the admin's.
                (Phase::Started, Some(new)) => match &installed {
                    Some(i) if !i.contains(&new.id) => Some(format!(
                        "its agent to install a bundle with generation {} (installed: {:?})",
                        new.id, i
                    )),
                    _ => None,
                },
                (Phase::Activated, Some(_)) => {
                    let old: Vec<String> = certs
                        .iter()
                        .filter(|(_, g)| **g != active.id)
                        .map(|(p, g)| format!("{p} (generation {g})"))
                        .collect();
                    (!old.is_empty()).then(|| {
                        format!(
                            "certificates re-issued by generation {}: {}",
                            active.id,
                            old.join(", ")
                        )
                    })
                }
                // After `finish`, members restart once more without the retired generation.
                (Phase::Idle, None) if member => running
                    .as_ref()
                    .filter(|r| r.iter().any(|g| *g != active.id))
                    .map(|r| {
                        format!(
                            "a restart trusting only generation {} (etcd runs with {:?})",
                            active.id, r
                        )
                    }),
                _ => None,
            };
            nodes.push(NodeView {
                node,
                member,
                installed_bundle: installed,
                running_bundle: running,
                certificates: certs,
                reported_at: report.map(|r| r.reported_at),
                stale,
                waiting_for,
            });
        }
        let blocked_by = nodes
            .iter()
            .filter(|n| n.waiting_for.is_some())
            .map(|n| n.node.clone())
            .collect();
        let restart_lease = self
            .store
            .restart_lease(now)
            .await?
            .map(|(node, until)| (node, rfc3339(until)));
        Ok(RotationStatus {
            phase,
            active: (&active).into(),
            other: other.as_ref().map(Into::into),
            nodes,
            next_step: match phase {
                Phase::Idle => None,
                Phase::Started => Some("activate"),
                Phase::Activated => Some("finish"),
            },
            blocked_by,
            restart_lease,
            last_step: last,
        })
    }

    /// Re-reads the generations (another process may have taken a step) and checks the phase.
    async fn check_phase(
        &self,
        expected: Phase,
        step: &'static str,
    ) -> Result<(GenerationRecord, Option<GenerationRecord>), AuthorityError> {
        self.reload_generations().await?;
        let (phase, active, other) = self.rotation_phase()?;
        if phase != expected {
            return Err(AuthorityError::RotationPhase { step, phase });
        }
        Ok((active, other))
    }

    async fn check_converged(
        &self,
        step: &'static str,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        if force {
            return Ok(());
        }
        let status = self.rotation_status(now).await?;
        let lagging: Vec<String> = status
            .nodes
            .iter()
            .filter_map(|n| {
                Some(format!(
                    "{} (waiting for {})",
                    n.node,
                    n.waiting_for.as_ref()?
                ))
            })
            .collect();
        if lagging.is_empty() {
            Ok(())
        } else {
            Err(AuthorityError::NotConverged {
                step,
                nodes: lagging,
            })
        }
    }

    /// Starts a rotation: a new CA generation, trusted but not signing. The bundle now holds
    /// both; agents install it and restart their members one at a time.
    pub async fn rotate_start(
        &self,
        key_type: KeyType,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<GenerationRecord, AuthorityError> {
        // One start at a time across processes: the new key file is written before its row.
        let _lock = self.rotation_lock().await?;
        let (active, _) = self.check_phase(Phase::Idle, "start").await?;
        // The next id as the database has it (not this process's view, which may lag).
        let id = self.store.last_generation_id().await? + 1;
        // As long as the active one was made to last (its NotBefore was backdated).
        let backdate = time::Duration::try_from(self.policy.backdate).unwrap_or_default();
        let validity =
            (active.not_after - active.not_before - backdate).max(time::Duration::days(365));
        let common_name = match active.cert_der().and_then(|d| {
            let cert = pki::parse_certificate(&d).ok()?;
            let cn = cert
                .subject()
                .iter_common_name()
                .next()?
                .as_str()
                .ok()?
                .to_string();
            Some(cn)
        }) {
            Some(cn) => match cn.rsplit_once(" generation ") {
                Some((base, _)) => format!("{base} generation {id}"),
                None => format!("{cn} generation {id}"),
            },
            None => format!("etcd-ca generation {id}"),
        };
        let material = ca::create(
            &common_name,
            key_type,
            Duration::try_from(validity).unwrap_or(Duration::from_secs(10 * 365 * 86400)),
            self.policy.backdate,
            now,
        )?;
        // The generation that signs now vouches for the new one (clients pinned to it follow).
        let endorsement = ca::endorse(
            &material.cert_der,
            &material.key,
            &self.signer()?.issuer,
            active.not_after,
        )?;
        let key_file = DataDir::generation_key_file(id);
        let key_text = self.key_protection()?.key_file_text(&material.key)?;
        // Where the store holds the keys, the key goes in the generation's row (every server
        // sharing the database signs with it); else in its file, written first. A file replaces
        // the key of a start that failed before its row was written (unrecorded).
        let key_path = self.dir.resolve(&key_file);
        let in_store = self.store.holds_keys();
        if !in_store {
            fsutil::write_atomic(&key_path, key_text.as_bytes(), fsutil::PRIVATE)?;
        }
        let cert_pem = pki::certificate_pem(&material.cert_der);
        let record = GenerationRecord {
            id,
            state: GenerationState::Next,
            key_type: key_type.to_string(),
            cert_pem,
            fingerprint: pki::fingerprint(&material.cert_der),
            key_file,
            imported: false,
            not_before: material.not_before,
            not_after: material.not_after,
            activated_at: None,
            retired_at: None,
            created_at: now,
            endorsement_pem: Some(pki::certificate_pem(&endorsement)),
            key_pem: in_store.then(|| key_text.to_string()),
        };
        let event = AuditAction::RotateStart.event(
            actor,
            now,
            None,
            None,
            format!(
                "generation {id} ({}) trusted, not signing",
                record.fingerprint
            ),
        );
        let added = self.store.add_generation(&record, &event).await;
        if !matches!(added, Ok(true)) && !in_store {
            // Unrecorded: nothing may use it. (Another start cannot have written this path: it
            // would have held the lock.)
            let _ = std::fs::remove_file(&key_path);
        }
        self.reload_generations().await?;
        if !added? {
            return Err(self.phase_conflict("start"));
        }
        fsutil::write_atomic(
            &self.dir.resolve(&DataDir::generation_cert_file(id)),
            record.cert_pem.as_bytes(),
            fsutil::PUBLIC,
        )?;
        self.changed.notify_one();
        Ok(record)
    }

    /// The new generation signs; the old one stays trusted. Agents see that their certificates
    /// come from a retiring issuer and re-issue them.
    pub async fn rotate_activate(
        &self,
        force: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let (old, new) = self.check_phase(Phase::Started, "activate").await?;
        let new = new.ok_or(Fault::NoNextGeneration)?;
        self.check_converged("activate", force, now).await?;
        let event = AuditAction::RotateActivate.event(
            actor,
            now,
            None,
            None,
            format!(
                "generation {} signs, generation {} retiring{}",
                new.id,
                old.id,
                forced(force)
            ),
        );
        self.take_step(
            "activate",
            &[
                (old.id, GenerationState::Active, GenerationState::Next),
                (new.id, GenerationState::Next, GenerationState::Active),
            ],
            &event,
        )
        .await
    }

    /// Retires the old generation: the bundle holds only the new one.
    pub async fn rotate_finish(
        &self,
        force: bool,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let (_, old) = self.check_phase(Phase::Activated, "finish").await?;
        let old = old.ok_or_else(|| Fault::Corrupt {
            what: "the rotation is activated but its previous CA generation is missing".into(),
        })?;
        self.check_converged("finish", force, now).await?;
        let event = AuditAction::RotateFinish.event(
            actor,
            now,
            None,
            None,
            format!("generation {} retired{}", old.id, forced(force)),
        );
        self.take_step(
            "finish",
            &[(old.id, GenerationState::Next, GenerationState::Retired)],
            &event,
        )
        .await
    }

    /// Goes back from `start`: the new generation, which never signed, is retired.
    pub async fn rotate_abort(
        &self,
        actor: &str,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let (_, new) = self.check_phase(Phase::Started, "abort").await?;
        let new = new.ok_or(Fault::NoNextGeneration)?;
        let event = AuditAction::RotateAbort.event(
            actor,
            now,
            None,
            None,
            format!("generation {} retired before it signed", new.id),
        );
        self.take_step(
            "abort",
            &[(new.id, GenerationState::Next, GenerationState::Retired)],
            &event,
        )
        .await
    }

    /// Applies a step's state changes if the generations are still as the step saw them; the
    /// in-memory view then follows the store either way. The loser of two concurrent steps gets
    /// `rotation_phase`.
    async fn take_step(
        &self,
        step: &'static str,
        changes: &[(i64, GenerationState, GenerationState)],
        event: &AuditEvent,
    ) -> Result<(), AuthorityError> {
        let applied = self.store.set_generation_states(changes, event).await?;
        self.reload_generations().await?;
        if !applied {
            return Err(self.phase_conflict(step));
        }
        self.changed.notify_one();
        Ok(())
    }

    fn phase_conflict(&self, step: &'static str) -> AuthorityError {
        match self.rotation_phase() {
            Ok((phase, _, _)) => AuthorityError::RotationPhase { step, phase },
            Err(e) => e,
        }
    }

    /// Holds `ca/rotation.lock` (an advisory lock the kernel drops if the process dies) while
    /// a rotation starts.
    async fn rotation_lock(&self) -> Result<std::fs::File, AuthorityError> {
        let path = self.dir.resolve("ca/rotation.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| FsError::new("open", &path, e))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(FsError::new("lock", &path, e).into())
                }
            }
        }
    }

    /// The node of a member's certificate (server or peer profile): only members restart etcd,
    /// so only they may take the restart lease.
    pub async fn member_node(
        &self,
        der: &[u8],
        action: &'static str,
        now: OffsetDateTime,
    ) -> Result<String, AuthorityError> {
        let record = self.verify_client_certificate(der, now).await?;
        if is_member_profile(&record.profile) {
            Ok(record.node)
        } else {
            Err(AuthorityError::MemberCertificateRequired {
                action,
                profile: record.profile,
                node: record.node,
            })
        }
    }

    /// The node a report speaks for. A member's report must come with a member certificate: a
    /// client certificate of the same node cannot claim what etcd runs with.
    pub async fn reporting_node(
        &self,
        der: &[u8],
        now: OffsetDateTime,
    ) -> Result<String, AuthorityError> {
        let record = self.verify_client_certificate(der, now).await?;
        if is_member_profile(&record.profile) {
            return Ok(record.node);
        }
        let filter = crate::store::CertificateFilter {
            node: Some(record.node.clone()),
            status: Some(crate::store::CertificateStatus::Valid),
            ..Default::default()
        };
        let member = self
            .store
            .certificates(&filter, now)
            .await?
            .iter()
            .any(|c| is_member_profile(&c.profile));
        if member {
            return Err(AuthorityError::MemberCertificateRequired {
                action: "report for a member",
                profile: record.profile,
                node: record.node,
            });
        }
        Ok(record.node)
    }

    /// Records what a node's agent has installed and runs with. `node` comes from the client
    /// certificate the report was made with.
    pub async fn record_node_report(
        &self,
        node: &str,
        installed_bundle: Vec<String>,
        running_bundle: Vec<String>,
        certificates: BTreeMap<String, String>,
        details: String,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        let known: BTreeSet<String> = self
            .generations()
            .into_iter()
            .map(|g| g.fingerprint)
            .collect();
        let keep = |v: Vec<String>| {
            v.into_iter()
                .filter(|f| known.contains(f))
                .collect::<Vec<_>>()
        };
        self.store
            .upsert_node_report(&NodeReport {
                node: node.to_string(),
                installed_bundle: keep(installed_bundle),
                running_bundle: keep(running_bundle),
                certificates,
                reported_at: now,
                details,
            })
            .await?;
        Ok(())
    }

    /// Takes the restart lease for `node`: only one member restarts at a time.
    pub async fn take_restart_lease(
        &self,
        node: &str,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, AuthorityError> {
        let until = now + time::Duration::try_from(LEASE_TTL).unwrap_or(time::Duration::minutes(2));
        let (holder, expires_at) = self.store.take_restart_lease(node, now, until).await?;
        if holder == node {
            Ok(expires_at)
        } else {
            Err(AuthorityError::LeaseHeld {
                holder,
                until: expires_at,
            })
        }
    }

    pub async fn release_restart_lease(&self, node: &str) -> Result<(), AuthorityError> {
        Ok(self.store.release_restart_lease(node).await?)
    }
}

fn forced(force: bool) -> &'static str {
    if force {
        " (forced)"
    } else {
        ""
    }
}
