//! The renewal agent: enrolls a node at boot, renews its certificates before they expire, keeps
//! the trust bundle and the CRL fresh, and runs hooks. It never lets a certificate expire while
//! the CA is reachable, and never installs a file it has not checked.
//!
//! - [`schedule`]: when to renew, back off and warn (pure);
//! - [`check`]: what a certificate must satisfy before it is installed (pure);
//! - `enroll`: enrollment at boot (tokens, pending keys); `trust`: the bundle, the CRLs and the
//!   rolling restart; [`watch`]: the long poll; [`crls`]: one CRL file per CA; `status`:
//!   `agent status` and `--print-unit`;
//! - this module: the settings, the loop, renewal, reports to the CA, the hooks.
//!
//! Files in the PKI dir (the names `etcd-ca etcd-flags` prints): `ca.crt`, `ca.crl`,
//! `PROFILE.crt`, `PROFILE.key` (0600) and `etcd-ca-agent.json` (state, no secrets).

pub mod check;
pub mod crls;
mod enroll;
pub mod observe;
pub mod schedule;
mod status;
mod trust;
pub mod watch;

use enroll::stranger_in;
pub use status::{status_report, systemd_unit};

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::client::{ApiClient, ClientError, Identity, Trust};
use crate::duration::rfc3339;
use crate::etcd_flags::files;
use crate::fsutil::{self, FsError};
use crate::names::NodeName;
use crate::pki::{self, KeyType, PkiError};
use crate::wire::{
    Certificate as IssuedCertificate, EnrollBody, Enrollment, ErrorCode, RenewBody, ReportBody,
};
use check::{check_certificate, Expected, InstallRefusal};
use schedule::{Urgency, Validity};
use watch::ChangeWatch;

/// How soon a member waiting for the restart lease asks again (plus up to as much jitter, so
/// waiting members do not ask in lockstep). A member's restart takes seconds; this keeps the
/// hand-over to the next one about as short, without waking the whole fleet at each release.
const LEASE_RETRY: Duration = Duration::from_secs(2);

/// The state file's name in the PKI dir.
pub const STATE_FILE: &str = "etcd-ca-agent.json";

/// Where a bootstrap token comes from. A file is re-read whenever a token is needed, so an
/// operator can drop a new one in without restarting the agent.
#[derive(Clone, Debug)]
pub enum TokenSource {
    Literal(String),
    File(PathBuf),
}

/// Validated agent settings.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub server: String,
    pub ca_fingerprint: String,
    pub node: NodeName,
    pub dir: PathBuf,
    pub token: Option<TokenSource>,
    pub profiles: Vec<String>,
    pub on_renew: Option<String>,
    pub on_trust_change: Option<String>,
    /// The local member's client URL: after a trust change restart the agent waits until it
    /// answers /health over TLS with the new bundle before letting the next member restart.
    pub etcd_endpoint: Option<String>,
    /// The local member's peer URL: the agent reads which certificate it serves there.
    pub etcd_peer_endpoint: Option<String>,
    /// Where to write the node_exporter textfile with this node's certificates' expiry.
    pub textfile_dir: Option<PathBuf>,
    pub once: bool,
    /// Renew every certificate at the first pass even if it is not due (like SIGHUP).
    pub renew_now: bool,
    /// How often the trust bundle and the CRL are checked.
    pub refresh_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

/// What stopped a step of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("a new bootstrap token is needed for {}: {reason}; {}", profiles.join(", "), match token_file {
        Some(file) => format!("write it to the --token-file {} (a running agent reads it again every 30 s)", file.display()),
        None => "pass one with --token or write it to a --token-file".to_string(),
    })]
    NeedToken {
        profiles: Vec<String>,
        reason: String,
        /// Where the agent waits for one; without a token file none can arrive.
        token_file: Option<PathBuf>,
    },
    #[error("cannot reach the CA: {0}")]
    Client(#[from] ClientError),
    #[error("the server at {server} is not the CA pinned by --ca-fingerprint {pin}: {reason}")]
    PinMismatch {
        server: String,
        pin: String,
        reason: String,
    },
    #[error("cannot use --dir {}: {source}", dir.display())]
    DirUnusable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot read the --token-file {}: {reason}", path.display())]
    TokenFile { path: PathBuf, reason: String },
    #[error("the CA refused to enroll node {node} ({code}): {message}")]
    EnrollRefused {
        node: String,
        code: String,
        message: String,
    },
    #[error("the {profile} certificate from the CA was not installed: {refusal}")]
    Refused {
        profile: String,
        refusal: InstallRefusal,
    },
    #[error("the CA sent an unusable {what}: {reason}")]
    BadAnswer { what: &'static str, reason: String },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

impl AgentError {
    /// Faults that retrying cannot fix: the agent stops and says so instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            AgentError::NeedToken {
                token_file: None,
                ..
            } | AgentError::PinMismatch { .. }
                | AgentError::DirUnusable { .. }
                | AgentError::TokenFile { .. }
                | AgentError::EnrollRefused { .. }
        )
    }
}

/// The agent's memory between runs. No secrets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentState {
    pub node: String,
    pub server: String,
    pub ca_fingerprint: String,
    pub profiles: Vec<String>,
    pub bundle_etag: Option<String>,
    pub crl_etag: Option<String>,
    pub last_success: Option<String>,
    pub last_error: Option<String>,
    pub renewals: u64,
    /// Fingerprints of the bundle etcd was last (re)started with.
    #[serde(default)]
    pub running_bundle: Vec<String>,
}

/// One certificate on disk with its key.
struct Installed {
    der: Vec<u8>,
    key: KeyPair,
    validity: Validity,
    serial: String,
}

fn now() -> OffsetDateTime {
    crate::clock::now()
}

fn random_unit() -> f64 {
    // Jitter only: without randomness it is simply none.
    let bytes = crate::pki::random_bytes::<8>().unwrap_or_default();
    (u64::from_be_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

fn to_std(d: time::Duration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

/// Reads a certificate and its key from the PKI dir, if both are there and belong together.
fn load_installed(dir: &Path, profile: &str) -> Option<Installed> {
    let cert_pem = std::fs::read_to_string(dir.join(files::certificate(profile))).ok()?;
    let der = pki::pem_certificates(&cert_pem).ok()?.into_iter().next()?;
    let cert = pki::parse_certificate(&der).ok()?;
    let key_type = KeyType::of_spki(cert.public_key()).ok()?;
    let key_pem = std::fs::read_to_string(dir.join(files::key(profile))).ok()?;
    let key = pki::load_private_key(&key_pem, key_type).ok()?;
    if !pki::key_matches_certificate(&key, &cert) {
        return None;
    }
    let validity = Validity {
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    };
    let serial = pki::serial_hex(&cert);
    Some(Installed {
        der,
        key,
        validity,
        serial,
    })
}

/// When a certificate on disk is due for renewal.
pub fn renewal_due_at(validity: Validity, serial: &str) -> OffsetDateTime {
    let at = schedule::renewal_time(validity, schedule::jitter_from(serial.as_bytes()));
    at.replace_nanosecond(0).unwrap_or(at)
}

fn read_bundle(dir: &Path) -> Result<Vec<Vec<u8>>, AgentError> {
    let path = dir.join(files::CA_BUNDLE);
    let text = std::fs::read_to_string(&path).map_err(|e| FsError::new("read", &path, e))?;
    match pki::pem_certificates(&text) {
        Ok(ders) if !ders.is_empty() => Ok(ders),
        Ok(_) => Err(AgentError::Damaged {
            path,
            reason: "it holds no certificate".into(),
        }),
        Err(e) => Err(AgentError::Damaged {
            path,
            reason: e.to_string(),
        }),
    }
}

/// True when the CRL file is there and parses (a broken one makes etcd refuse everyone).
fn crl_intact(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|der| pki::check_crl_der(&der).is_ok())
}

/// The renewal agent for one node.
pub struct Agent {
    settings: AgentSettings,
    state: AgentState,
    next_refresh: OffsetDateTime,
    /// The fingerprint of the CA that signs now, as the server last said.
    active_ca: Option<String>,
    /// This run created the PKI dir: a fault that stops the agent before it wrote anything
    /// removes it again.
    created_dir: bool,
    /// Profiles whose certificate the CA refused to renew (revoked, unknown, untrusted): they
    /// are enrolled again as soon as a token is there.
    refused: std::collections::BTreeSet<String>,
    /// Which of the CA servers answered last, shared by every client this agent builds.
    preferred_server: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Failed passes since the last success.
    failures: u64,
}

impl Agent {
    pub fn new(settings: AgentSettings) -> Result<Self, AgentError> {
        let unusable = |source| AgentError::DirUnusable {
            dir: settings.dir.clone(),
            source,
        };
        let created_dir = !settings.dir.exists();
        if created_dir {
            std::fs::create_dir_all(&settings.dir).map_err(unusable)?;
            std::fs::set_permissions(&settings.dir, std::fs::Permissions::from_mode(0o700))
                .map_err(unusable)?;
        }
        // Every file the agent keeps is written there: find out now, not at the first renewal.
        tempfile::Builder::new()
            .prefix(".etcd-ca-agent-probe")
            .tempfile_in(&settings.dir)
            .map_err(unusable)?;
        let mut state: AgentState = std::fs::read(settings.dir.join(STATE_FILE))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        if state.running_bundle.is_empty() {
            // Certificates that were in place before this agent (adopted, or an old state file):
            // etcd was started with the bundle on disk.
            state.running_bundle = bundle_fingerprints(&settings.dir);
        }
        Ok(Self {
            settings,
            state,
            next_refresh: OffsetDateTime::UNIX_EPOCH,
            active_ca: None,
            created_dir,
            refused: Default::default(),
            preferred_server: Default::default(),
            failures: 0,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.settings.dir.join(name)
    }

    fn save_state(&mut self, error: Option<String>) {
        let s = &self.settings;
        self.state.node = s.node.to_string();
        self.state.server = s.server.clone();
        self.state.ca_fingerprint = s.ca_fingerprint.clone();
        self.state.profiles = s.profiles.clone();
        match error {
            Some(e) => self.state.last_error = Some(format!("{}: {e}", rfc3339(now()))),
            None => {
                self.state.last_success = Some(rfc3339(now()));
                self.state.last_error = None;
            }
        }
        let path = self.path(STATE_FILE);
        let written = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                fsutil::write_atomic(&path, &bytes, fsutil::PUBLIC).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the agent state file");
        }
    }

    /// Runs until SIGTERM/SIGINT (or after one pass with `--once`). SIGHUP renews at once.
    /// A fault retrying cannot fix ([`AgentError::is_permanent`]) ends it with that error.
    pub async fn run(mut self) -> Result<(), AgentError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = signal(SignalKind::hangup())
            .map_err(|e| FsError::new("watch SIGHUP for", Path::new("agent"), e))?;
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|e| FsError::new("watch SIGTERM for", Path::new("agent"), e))?;
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|e| FsError::new("watch SIGINT for", Path::new("agent"), e))?;
        let mut renew_now = self.settings.renew_now;
        let mut watch = ChangeWatch::default();
        tracing::info!(node = %self.settings.node, dir = %self.settings.dir.display(), server = %self.settings.server, "agent started");
        loop {
            // A signal stops the agent even in the middle of a request. Files are only ever
            // replaced by rename, so none is left half-written; an enrollment cut short resumes
            // with the same pending keys.
            let outcome = tokio::select! {
                outcome = self.step(renew_now) => outcome,
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            };
            let wait = match outcome {
                Ok(next) => {
                    self.failures = 0;
                    renew_now = false;
                    self.save_state(None);
                    self.write_textfile();
                    // What it installed (rotation status reads it), how it went, what the
                    // member serves: after the pass, so the success it reports is this one.
                    if let Err(e) = self.report().await {
                        tracing::warn!(error = %e, "cannot report to the CA");
                    }
                    if self.settings.once {
                        return Ok(());
                    }
                    next
                }
                Err(e) if e.is_permanent() && self.created_dir => {
                    // Only succeeds while it is still empty.
                    let _ = std::fs::remove_dir(&self.settings.dir);
                    return Err(e);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.save_state(Some(e.to_string()));
                    self.write_textfile();
                    // The CA learns of the failure if it can be reached at all.
                    if !matches!(e, AgentError::Client(_) | AgentError::PinMismatch { .. }) {
                        if let Err(e) = self.report().await {
                            tracing::debug!(error = %e, "cannot report the failure to the CA");
                        }
                    }
                    if self.settings.once || e.is_permanent() {
                        return Err(e);
                    }
                    let attempt = u32::try_from(self.failures).unwrap_or(u32::MAX);
                    self.report_failure(&e, attempt)
                }
            };
            // A forced renewal (SIGHUP) that failed is retried with the backoff until it succeeds.
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: renewing now");
                    renew_now = true;
                }
                _ = watch.next_change(self.watch_client(), random_unit()) => {
                    // The bundle, the CRL, the signing CA or the restart lease changed.
                    self.next_refresh = OffsetDateTime::UNIX_EPOCH;
                }
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    /// Logs a failed step as loudly as the certificates' state warrants; returns the delay.
    fn report_failure(&self, error: &AgentError, attempt: u32) -> Duration {
        let now = now();
        let mut worst = Urgency::Calm;
        let mut remaining = time::Duration::days(365);
        for profile in &self.settings.profiles {
            if let Some(installed) = load_installed(&self.settings.dir, profile) {
                let jitter = schedule::jitter_from(installed.serial.as_bytes());
                worst = worst.max(schedule::urgency(installed.validity, jitter, now));
                remaining = remaining.min(installed.validity.remaining(now));
            }
        }
        let delay = match error {
            // Waiting for an operator: check the token file now and then, quietly.
            AgentError::NeedToken { .. } => {
                self.settings.refresh_interval.min(Duration::from_secs(30))
            }
            _ => schedule::backoff(
                attempt,
                self.settings.backoff_base,
                self.settings.backoff_cap,
                remaining,
                random_unit(),
            ),
        };
        let retry_in = format!("{:.1}s", delay.as_secs_f64());
        match (error, worst) {
            (AgentError::NeedToken { .. }, _) | (_, Urgency::Expired) => {
                tracing::error!(error = %error, retry_in, "certificates cannot be renewed")
            }
            (_, Urgency::Critical) => tracing::error!(
                error = %error, attempt, retry_in,
                expires_in = %format!("{}s", remaining.whole_seconds()),
                "renewal failing and a certificate expires soon"
            ),
            (_, Urgency::Due) => {
                tracing::warn!(error = %error, attempt, retry_in, "renewal failed; retrying")
            }
            (_, Urgency::Calm) => {
                tracing::warn!(error = %error, attempt, retry_in, "CA request failed; retrying")
            }
        }
        delay
    }

    /// One pass: enroll what is missing, renew what is due, refresh bundle and CRL. Returns how
    /// long to sleep before the next pass.
    async fn step(&mut self, renew_now: bool) -> Result<Duration, AgentError> {
        self.enroll_missing().await?;
        // Files someone or something damaged are fetched again now, not when they change.
        if read_bundle(&self.settings.dir).is_err() {
            self.repair_bundle().await?;
        }
        if now() >= self.next_refresh || !crl_intact(&self.path(files::CRL)) {
            let settled = self.refresh_trust().await?;
            self.next_refresh = now()
                + if settled {
                    self.settings.refresh_interval
                } else {
                    // Waiting for the restart lease: ask again soon.
                    LEASE_RETRY
                        .mul_f64(1.0 + random_unit())
                        .min(self.settings.refresh_interval)
                };
        }
        // A CRL just installed may list one of our own certificates: enroll it again now (or
        // fail the pass, saying a token is needed) rather than only at the next pass.
        self.enroll_missing().await?;
        let mut next = now() + time::Duration::hours(1);
        for profile in self.settings.profiles.clone() {
            let installed = load_installed(&self.settings.dir, &profile).ok_or_else(|| {
                AgentError::NeedToken {
                    profiles: vec![profile.clone()],
                    reason: "its certificate or key disappeared".into(),
                    token_file: self.token_file(),
                }
            })?;
            let due = renewal_due_at(installed.validity, &installed.serial);
            let retiring = self.issued_by_retiring_ca(&installed.der);
            if retiring {
                tracing::info!(profile = %profile, serial = %installed.serial, "certificate comes from a retiring CA: re-issuing it now");
            }
            let due = if renew_now || retiring || now() >= due {
                let renewed = match self.renew(&profile, installed).await {
                    Ok(renewed) => renewed,
                    // Revoked (or otherwise refused): enrolled again with the token, now if
                    // one is there (else the error says where to put one).
                    Err(refused @ AgentError::NeedToken { .. }) => {
                        self.refused.insert(profile.clone());
                        if self.read_token()?.is_none() {
                            return Err(refused);
                        }
                        self.enroll_missing().await?;
                        load_installed(&self.settings.dir, &profile).ok_or(refused)?
                    }
                    Err(e) => return Err(e),
                };
                renewal_due_at(renewed.validity, &renewed.serial)
            } else {
                due
            };
            next = next.min(due);
        }
        next = next.min(self.next_refresh);
        Ok(to_std(next - now()).max(Duration::from_millis(200)))
    }

    /// Renews one certificate over mTLS with the same key, checks it, installs it atomically.
    async fn renew(
        &mut self,
        profile: &str,
        installed: Installed,
    ) -> Result<Installed, AgentError> {
        let bundle = read_bundle(&self.settings.dir)?;
        let client = self.ca_client(Some(identity(&installed)))?;
        let issued: IssuedCertificate = match client.renew(&RenewBody::default()).await {
            Ok(i) => i,
            Err(ClientError::Api { code, message, .. })
                if matches!(
                    ErrorCode::parse(&code),
                    Some(
                        ErrorCode::ClientCertificateExpired
                            | ErrorCode::ClientCertificateRevoked
                            | ErrorCode::ClientCertificateUnknown
                            | ErrorCode::ClientCertificateUntrusted
                            | ErrorCode::ClientCertificateRequired
                    )
                ) =>
            {
                return Err(AgentError::NeedToken {
                    profiles: vec![profile.to_string()],
                    reason: format!("the CA will not renew it ({code}: {message})"),
                    token_file: self.token_file(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let expected = Expected::of(&installed.der).map_err(|refusal| AgentError::Refused {
            profile: profile.to_string(),
            refusal,
        })?;
        let der = check_certificate(
            &issued.certificate_pem,
            &installed.key.subject_public_key_info(),
            &bundle,
            Some(&expected),
            now(),
        )
        .map_err(|refusal| AgentError::Refused {
            profile: profile.to_string(),
            refusal,
        })?;
        let cert_path = self.path(&files::certificate(profile));
        fsutil::write_atomic(
            &cert_path,
            issued.certificate_pem.as_bytes(),
            fsutil::PUBLIC,
        )?;
        self.state.renewals += 1;
        tracing::info!(action = "renew", profile, old_serial = %installed.serial, serial = %issued.serial, not_after = %rfc3339(issued.not_after), "renewed certificate");
        self.run_hook(self.settings.on_renew.clone(), "renew", &[cert_path])
            .await;
        Ok(Installed {
            der,
            key: installed.key,
            validity: Validity {
                not_before: issued.not_before,
                not_after: issued.not_after,
            },
            serial: issued.serial,
        })
    }

    /// A client of the CA server, trusting the installed bundle as pins: the server must
    /// present one of its CAs, or a CA one of them endorsed in a rotation (see
    /// [`crate::lineage`]), so an agent that missed a bundle change is not stranded.
    fn ca_client(&self, identity: Option<Identity>) -> Result<ApiClient, AgentError> {
        let pins = bundle_fingerprints(&self.settings.dir);
        Ok(
            ApiClient::new(&self.settings.server, Trust::Pins(pins), identity)?
                .sharing_preferred_server(self.preferred_server.clone()),
        )
    }

    /// A client that trusts the CA by the pinned fingerprint (before anything is installed).
    fn pinned_client(&self) -> Result<ApiClient, AgentError> {
        let pin = self.settings.ca_fingerprint.clone();
        Ok(
            ApiClient::new(&self.settings.server, Trust::Fingerprint(pin), None)?
                .sharing_preferred_server(self.preferred_server.clone()),
        )
    }

    /// The client `watch` long-polls with; none before the first enrollment.
    fn watch_client(&self) -> Option<ApiClient> {
        self.path(files::CA_BUNDLE)
            .exists()
            .then(|| self.ca_client(None).ok())
            .flatten()
    }

    /// A certificate of this node on disk to authenticate with: one the installed CRL does not
    /// list and that has not expired if there is one (a revoked server certificate must not
    /// silence a node whose peer certificate is fine), else the first.
    fn any_installed(&self) -> Option<Installed> {
        let revoked = self.revoked_installed();
        let now = now();
        let installed: Vec<Installed> = self
            .settings
            .profiles
            .iter()
            .filter_map(|p| load_installed(&self.settings.dir, p))
            .collect();
        let usable = installed.iter().position(|i| {
            i.validity.not_after > now && !revoked.contains(i.serial.trim_start_matches('0'))
        });
        installed.into_iter().nth(usable.unwrap_or(0))
    }

    /// A client presenting this node's certificate (mTLS) to the CA server.
    fn node_client(&self) -> Result<ApiClient, AgentError> {
        let installed = self.any_installed().ok_or_else(|| AgentError::NeedToken {
            profiles: self.settings.profiles.clone(),
            reason: "no certificate to authenticate with".into(),
            token_file: self.token_file(),
        })?;
        self.ca_client(Some(identity(&installed)))
    }

    /// Tells the CA what this node has installed and runs with, so rotation status is truthful.
    async fn report(&self) -> Result<(), AgentError> {
        let certificates: BTreeMap<String, String> = self
            .settings
            .profiles
            .iter()
            .filter_map(|p| Some((p.clone(), load_installed(&self.settings.dir, p)?.serial)))
            .collect();
        let body = ReportBody {
            installed_bundle: bundle_fingerprints(&self.settings.dir),
            running_bundle: self.state.running_bundle.clone(),
            certificates,
            agent: Some(self.health()),
            served: self.probe_member().await,
        };
        self.node_client()?.report(&body).await?;
        Ok(())
    }

    /// Runs a hook through `sh -c`, telling it what changed. A failing hook is logged, not fatal.
    async fn run_hook(&self, command: Option<String>, event: &str, changed: &[PathBuf]) {
        let Some(command) = command else {
            return;
        };
        let files: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("ETCD_CA_EVENT", event)
            .env("ETCD_CA_NODE", self.settings.node.as_str())
            .env("ETCD_CA_DIR", &self.settings.dir)
            .env("ETCD_CA_CHANGED_FILES", files.join(" "))
            // Secrets the agent was given stay with it.
            .env_remove("ETCD_CA_TOKEN")
            .env_remove("ETCD_CA_PASSPHRASE")
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(Duration::from_secs(300), run).await {
            Ok(Ok(status)) if status.success() => tracing::info!(event, "hook ran"),
            Ok(Ok(status)) => tracing::warn!(event, %status, "hook failed"),
            Ok(Err(e)) => tracing::warn!(event, error = %e, "cannot run hook"),
            Err(_) => tracing::warn!(event, "hook did not finish within 5 minutes"),
        }
    }
}

/// The mTLS identity of an installed certificate.
fn identity(installed: &Installed) -> Identity {
    Identity {
        chain: vec![installed.der.clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(installed.key.serialize_der())),
    }
}

/// Fingerprints of the CA certificates in the installed bundle.
fn bundle_fingerprints(dir: &Path) -> Vec<String> {
    read_bundle(dir)
        .map(|b| b.iter().map(|c| pki::fingerprint(c)).collect())
        .unwrap_or_default()
}
