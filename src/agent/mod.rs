//! The renewal agent: enrolls a node at boot, renews its certificates before they expire, keeps
//! the trust bundle and the CRL fresh, and runs hooks. It never lets a certificate expire while
//! the CA is reachable, and never installs a file it has not checked.
//!
//! - [`schedule`]: when to renew, back off and warn (pure);
//! - [`check`]: what a certificate must satisfy before it is installed (pure);
//! - this module: the files in the PKI dir, the loop, the calls to the CA, the hooks.
//!
//! Files in the PKI dir (the names `etcd-ca etcd-flags` prints): `ca.crt`, `ca.crl`,
//! `PROFILE.crt`, `PROFILE.key` (0600) and `etcd-ca-agent.json` (state, no secrets).

pub mod check;
pub mod crls;
pub mod schedule;
pub mod watch;

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
    Certificate as IssuedCertificate, EnrollBody, Enrollment, RenewBody, ReportBody,
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
        Some(file) => format!("write it to the --token-file {} (read again every 30 s)", file.display()),
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
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
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
        let mut failures: u32 = 0;
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
                    failures = 0;
                    renew_now = false;
                    self.save_state(None);
                    if self.settings.once {
                        return Ok(());
                    }
                    next
                }
                Err(e) if e.is_permanent() => {
                    if self.created_dir {
                        // Only succeeds while it is still empty.
                        let _ = std::fs::remove_dir(&self.settings.dir);
                    }
                    return Err(e);
                }
                Err(e) => {
                    self.save_state(Some(e.to_string()));
                    if self.settings.once {
                        return Err(e);
                    }
                    failures = failures.saturating_add(1);
                    self.report_failure(&e, failures)
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
        let mut next = now() + time::Duration::hours(1);
        let mut renewed_any = false;
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
                let renewed = self.renew(&profile, installed).await?;
                renewed_any = true;
                renewal_due_at(renewed.validity, &renewed.serial)
            } else {
                due
            };
            next = next.min(due);
        }
        if renewed_any {
            // Rotation status shows which certificate each node holds: tell it now.
            if let Err(e) = self.report().await {
                tracing::warn!(error = %e, "cannot report to the CA");
            }
        }
        next = next.min(self.next_refresh);
        Ok(to_std(next - now()).max(Duration::from_millis(200)))
    }

    fn token_file(&self) -> Option<PathBuf> {
        match &self.settings.token {
            Some(TokenSource::File(path)) => Some(path.clone()),
            _ => None,
        }
    }

    /// The bootstrap token, if one was given. A token file that is missing or unreadable is an
    /// error naming it; an empty one means "no token yet".
    fn read_token(&self) -> Result<Option<String>, AgentError> {
        match &self.settings.token {
            None => Ok(None),
            Some(TokenSource::Literal(t)) => Ok(Some(t.clone())),
            Some(TokenSource::File(path)) => match std::fs::read_to_string(path) {
                Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
                Err(e) => Err(AgentError::TokenFile {
                    path: path.clone(),
                    reason: match e.kind() {
                        std::io::ErrorKind::NotFound => "it does not exist".to_string(),
                        _ => e.to_string(),
                    },
                }),
            },
        }
    }

    /// Enrolls every profile without a usable certificate (missing, mismatched or expired).
    async fn enroll_missing(&mut self) -> Result<(), AgentError> {
        let now = now();
        let missing: Vec<String> = self
            .settings
            .profiles
            .iter()
            .filter(|p| {
                load_installed(&self.settings.dir, p).is_none_or(|i| i.validity.not_after <= now)
            })
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let Some(token) = self.read_token()? else {
            let reason = if missing
                .iter()
                .any(|p| self.path(&files::certificate(p)).exists())
            {
                "a certificate expired (the node was off too long to renew over mTLS)"
            } else {
                "this node has no certificates yet"
            };
            return Err(AgentError::NeedToken {
                profiles: missing,
                reason: reason.into(),
                token_file: self.token_file(),
            });
        };

        let pin = self.settings.ca_fingerprint.clone();
        let client = ApiClient::new(&self.settings.server, Trust::Fingerprint(pin.clone()), None)?;
        let pin_mismatch = |reason: String| AgentError::PinMismatch {
            server: self.settings.server.clone(),
            pin: pin.clone(),
            reason,
        };
        // Make sure this is the pinned CA before anything is written.
        match client.get("/v1/health").await {
            Err(ClientError::Untrusted { reason, .. }) => return Err(pin_mismatch(reason)),
            other => {
                other?;
            }
        }

        // Keys: reuse the key on disk (only the certificate then changes under etcd), else a
        // pending key kept across retries, else a new one. Keys never leave this host.
        let mut keys = BTreeMap::new();
        let mut csrs = BTreeMap::new();
        for profile in &missing {
            let key = self.enrollment_key(profile)?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, self.settings.node.as_str());
            params.distinguished_name = dn;
            let csr = params
                .serialize_request(&key)
                .and_then(|c| c.pem())
                .map_err(|e| PkiError::Csr(e.to_string()))?;
            csrs.insert(profile.clone(), csr);
            keys.insert(profile.clone(), key);
        }
        let request = EnrollBody {
            token: token.to_string(),
            node: Some(self.settings.node.to_string()),
            csrs: csrs.clone(),
        };
        let answer: Enrollment = match client.post_json("/v1/enroll", &request).await {
            Ok(a) => a,
            Err(ClientError::Untrusted { reason, .. }) => return Err(pin_mismatch(reason)),
            // A token file can be given a new token while the agent waits; a literal cannot.
            Err(ClientError::Api { code, message, .. })
                if code.starts_with("token_")
                    && matches!(self.settings.token, Some(TokenSource::File(_))) =>
            {
                return Err(AgentError::NeedToken {
                    profiles: missing,
                    reason: format!("the CA refused the token ({code}: {message})"),
                    token_file: self.token_file(),
                })
            }
            Err(ClientError::Api {
                status,
                code,
                message,
                ..
            }) if (400..500).contains(&status) && status != 408 && status != 429 => {
                // Retrying cannot help, so leave nothing behind (keys made for this request).
                for profile in &missing {
                    let _ = std::fs::remove_file(self.path(&pending_key(profile)));
                }
                return Err(AgentError::EnrollRefused {
                    node: self.settings.node.to_string(),
                    code,
                    message,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let bundle =
            pki::pem_certificates(&answer.trust_bundle).map_err(|e| AgentError::BadAnswer {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
        // Every CA in the bundle must be the pinned one or one it endorsed (a pin taken before
        // a rotation still enrolls after it).
        if let Some(stranger) = stranger_in(&client, &pin, &bundle, now).await? {
            return Err(pin_mismatch(format!(
                "its trust bundle holds {stranger}, which the pinned CA never endorsed"
            )));
        }
        let mut checked = BTreeMap::new();
        for (profile, key) in &keys {
            let issued = answer
                .certificates
                .get(profile)
                .ok_or(AgentError::BadAnswer {
                    what: "enrollment",
                    reason: format!("no {profile} certificate in it"),
                })?;
            check_certificate(
                &issued.certificate_pem,
                &key.subject_public_key_info(),
                &bundle,
                None,
                now,
            )
            .map_err(|refusal| AgentError::Refused {
                profile: profile.clone(),
                refusal,
            })?;
            checked.insert(profile.clone(), issued);
        }

        let mut changed = Vec::new();
        self.install_bundle(&answer.trust_bundle, &mut changed)
            .await?;
        for (profile, issued) in checked {
            let key_path = self.path(&files::key(&profile));
            let pending = self.path(&pending_key(&profile));
            if pending.exists() {
                std::fs::rename(&pending, &key_path)
                    .map_err(|e| FsError::new("install", &key_path, e))?;
                fsutil::sync_dir(&self.settings.dir)?;
                changed.push(key_path);
            }
            let cert_path = self.path(&files::certificate(&profile));
            fsutil::write_atomic(
                &cert_path,
                issued.certificate_pem.as_bytes(),
                fsutil::PUBLIC,
            )?;
            tracing::info!(action = "enroll", profile = %profile, serial = %issued.serial, not_after = %rfc3339(issued.not_after), "installed certificate");
            changed.push(cert_path);
        }
        self.refresh_crl(true).await?;
        self.run_hook(self.settings.on_renew.clone(), "enroll", &changed)
            .await;
        Ok(())
    }

    fn enrollment_key(&self, profile: &str) -> Result<KeyPair, AgentError> {
        let key_path = self.path(&files::key(profile));
        if let Ok(pem_text) = std::fs::read_to_string(&key_path) {
            for key_type in [
                KeyType::EcdsaP256,
                KeyType::EcdsaP384,
                KeyType::Ed25519,
                KeyType::Rsa,
            ] {
                if let Ok(key) = pki::load_private_key(&pem_text, key_type) {
                    return Ok(key);
                }
            }
        }
        let pending = self.path(&pending_key(profile));
        if let Ok(pem_text) = std::fs::read_to_string(&pending) {
            if let Ok(key) = pki::load_private_key(&pem_text, KeyType::EcdsaP256) {
                return Ok(key);
            }
        }
        let key = KeyType::EcdsaP256.generate()?;
        fsutil::write_atomic(&pending, key.serialize_pem().as_bytes(), fsutil::PRIVATE)?;
        Ok(key)
    }

    /// Fetches the trust bundle again through the pin the agent enrolled with (and the
    /// endorsements since), when the installed one cannot be read.
    async fn repair_bundle(&mut self) -> Result<(), AgentError> {
        let damage = match read_bundle(&self.settings.dir) {
            Ok(_) => return Ok(()),
            Err(e) => e.to_string(),
        };
        let pin = self.settings.ca_fingerprint.clone();
        let client = ApiClient::new(&self.settings.server, Trust::Fingerprint(pin.clone()), None)?;
        let text = String::from_utf8_lossy(&client.get("/v1/ca").await?.body).into_owned();
        let bundle = pki::pem_certificates(&text).map_err(|e| AgentError::BadAnswer {
            what: "trust bundle",
            reason: e.to_string(),
        })?;
        if let Some(stranger) = stranger_in(&client, &pin, &bundle, now()).await? {
            return Err(AgentError::BadAnswer {
                what: "trust bundle",
                reason: format!("it holds {stranger}, which the pinned CA {pin} never endorsed"),
            });
        }
        let path = self.path(files::CA_BUNDLE);
        fsutil::write_atomic(&path, text.as_bytes(), fsutil::PUBLIC)?;
        tracing::warn!(file = %path.display(), damage = %damage, "repaired the trust bundle");
        Ok(())
    }

    /// Renews one certificate over mTLS with the same key, checks it, installs it atomically.
    async fn renew(
        &mut self,
        profile: &str,
        installed: Installed,
    ) -> Result<Installed, AgentError> {
        let bundle = read_bundle(&self.settings.dir)?;
        let client = self.ca_client(Some(identity(&installed)))?;
        let issued: IssuedCertificate =
            match client.post_json("/v1/renew", &RenewBody::default()).await {
                Ok(i) => i,
                Err(ClientError::Api { code, message, .. })
                    if code.starts_with("client_certificate_") =>
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

    /// Writes a new trust bundle if it differs from the one on disk.
    async fn install_bundle(
        &mut self,
        pem_text: &str,
        changed: &mut Vec<PathBuf>,
    ) -> Result<(), AgentError> {
        let path = self.path(files::CA_BUNDLE);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(pem_text) {
            return Ok(());
        }
        fsutil::write_atomic(&path, pem_text.as_bytes(), fsutil::PUBLIC)?;
        self.state.bundle_etag = Some(etag_of(pem_text.as_bytes()));
        tracing::info!(
            action = "trust-bundle",
            certificates = pem_text.matches("BEGIN CERTIFICATE").count(),
            "installed trust bundle"
        );
        changed.push(path.clone());
        if current.is_none() {
            // First enrollment: etcd starts with this bundle.
            self.state.running_bundle = bundle_fingerprints(&self.settings.dir);
        }
        Ok(())
    }

    /// True when the server says another CA signs now and that CA is in our bundle: the
    /// certificate comes from a retiring issuer and is re-issued at once.
    fn issued_by_retiring_ca(&self, der: &[u8]) -> bool {
        let Some(active) = &self.active_ca else {
            return false;
        };
        let Ok(bundle) = read_bundle(&self.settings.dir) else {
            return false;
        };
        let Some(active_der) = bundle.iter().find(|c| &pki::fingerprint(c) == active) else {
            return false;
        };
        pki::parse_certificate(der).is_ok_and(|cert| !pki::is_issued_by(&cert, active_der))
    }

    /// A client of the CA server, trusting the installed bundle as pins: the server must
    /// present one of its CAs, or a CA one of them endorsed in a rotation (see
    /// [`crate::lineage`]), so an agent that missed a bundle change is not stranded.
    fn ca_client(&self, identity: Option<Identity>) -> Result<ApiClient, AgentError> {
        let pins = bundle_fingerprints(&self.settings.dir);
        Ok(ApiClient::new(
            &self.settings.server,
            Trust::Pins(pins),
            identity,
        )?)
    }

    /// The client `watch` long-polls with; none before the first enrollment.
    fn watch_client(&self) -> Option<ApiClient> {
        self.path(files::CA_BUNDLE)
            .exists()
            .then(|| self.ca_client(None).ok())
            .flatten()
    }

    /// The first certificate of this node on disk, to authenticate with.
    fn any_installed(&self) -> Option<Installed> {
        self.settings
            .profiles
            .iter()
            .find_map(|p| load_installed(&self.settings.dir, p))
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
        };
        let bytes = serde_json::to_vec(&body).map_err(|e| AgentError::BadAnswer {
            what: "report",
            reason: e.to_string(),
        })?;
        ApiClient::check(
            self.node_client()?
                .send(
                    hyper::Method::POST,
                    "/v1/agent/report",
                    Some(("application/json", bytes)),
                    &[],
                )
                .await?,
        )?;
        Ok(())
    }

    /// A changed trust bundle. etcd reads it only at start, so with an --on-trust-change hook
    /// this is one step of a rolling restart: take the cluster-wide restart lease, install the
    /// bundle, run the hook, wait until the local member is healthy with the new bundle, report,
    /// give the lease back. Returns false when another member holds the lease (try later).
    async fn change_trust(&mut self, pem_text: &str) -> Result<bool, AgentError> {
        let path = self.path(files::CA_BUNDLE);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(pem_text) {
            return Ok(true);
        }
        let Some(hook) = self.settings.on_trust_change.clone() else {
            // Nothing restarts etcd: install it; etcd keeps running with what it started with.
            let mut changed = Vec::new();
            self.install_bundle(pem_text, &mut changed).await?;
            return Ok(true);
        };
        let member = self
            .settings
            .profiles
            .iter()
            .any(|p| crate::policy::is_member_profile(p));
        if !member {
            // A client's consumer (say kube-apiserver) is restarted by its hook; the restart
            // lease is the members' (only member certificates may take it).
            let mut changed = Vec::new();
            self.install_bundle(pem_text, &mut changed).await?;
            self.run_hook(Some(hook), "trust-change", std::slice::from_ref(&path))
                .await;
            return Ok(true);
        }
        let client = self.node_client()?;
        let lease = ApiClient::check(
            client
                .send(hyper::Method::POST, "/v1/rotation/lease", None, &[])
                .await?,
        );
        match lease {
            Ok(_) => {}
            Err(ClientError::Api { code, message, .. }) if code == "lease_held" => {
                tracing::info!(reason = %message, "trust bundle changed; waiting for the restart lease");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        let restarted = async {
            let mut changed = Vec::new();
            self.install_bundle(pem_text, &mut changed).await?;
            self.run_hook(Some(hook), "trust-change", std::slice::from_ref(&path))
                .await;
            self.wait_member_healthy().await?;
            self.state.running_bundle = bundle_fingerprints(&self.settings.dir);
            tracing::info!(action = "trust-change", running_bundle = ?self.state.running_bundle, "member restarted with the new trust bundle");
            self.report().await
        }
        .await;
        let released = client
            .send(hyper::Method::POST, "/v1/rotation/lease/release", None, &[])
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "cannot return the restart lease; it expires on its own");
        }
        restarted.map(|()| true)
    }

    /// Waits until the local member answers /health over TLS trusting the installed bundle.
    async fn wait_member_healthy(&self) -> Result<(), AgentError> {
        let Some(endpoint) = &self.settings.etcd_endpoint else {
            return Ok(());
        };
        let deadline = now() + time::Duration::minutes(2);
        loop {
            let answer = match self.member_client(endpoint) {
                Ok(c) => c
                    .send(hyper::Method::GET, "/health", None, &[])
                    .await
                    .map_err(AgentError::from),
                Err(e) => Err(e),
            };
            match answer {
                Ok(r)
                    if r.status.is_success()
                        && String::from_utf8_lossy(&r.body).contains("true") =>
                {
                    return Ok(())
                }
                other => {
                    if now() > deadline {
                        return Err(AgentError::BadAnswer {
                            what: "member health",
                            reason: format!(
                                "{endpoint} is not healthy after the restart: {other:?}"
                            ),
                        });
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A client of the local etcd member, trusting the installed bundle.
    fn member_client(&self, endpoint: &str) -> Result<ApiClient, AgentError> {
        let installed = self.any_installed().ok_or_else(|| AgentError::BadAnswer {
            what: "member health",
            reason: "no certificate to authenticate with".into(),
        })?;
        Ok(ApiClient::new(
            endpoint,
            Trust::Bundle(read_bundle(&self.settings.dir)?),
            Some(identity(&installed)),
        )?
        .with_timeout(Duration::from_secs(3)))
    }

    /// Fetches the trust bundle and the CRL if they changed (conditional requests). Returns
    /// false while a changed bundle waits for the restart lease.
    async fn refresh_trust(&mut self) -> Result<bool, AgentError> {
        let client = self.ca_client(None)?;
        let mut settled = true;
        // What is on disk, not what the state file remembers: a damaged file is fetched again.
        let etag = std::fs::read(self.path(files::CA_BUNDLE))
            .ok()
            .map(|b| etag_of(&b));
        let response = conditional_get(&client, "/v1/ca", etag.as_deref()).await?;
        if let Some(body) = response {
            let text = String::from_utf8(body).map_err(|e| AgentError::BadAnswer {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
            pki::pem_certificates(&text).map_err(|e| AgentError::BadAnswer {
                what: "trust bundle",
                reason: e.to_string(),
            })?;
            if !self.change_trust(&text).await? {
                // Not installed yet: ask again next time (the ETag must not say we have it).
                self.state.bundle_etag = None;
                settled = false;
            }
        }
        self.refresh_crl(false).await?;
        #[derive(Deserialize)]
        struct Health {
            ca_fingerprint: String,
        }
        let health: Health = client.get_json("/v1/health").await?;
        self.active_ca = Some(health.ca_fingerprint);
        if let Err(e) = self.report().await {
            tracing::warn!(error = %e, "cannot report to the CA");
        }
        Ok(settled)
    }

    async fn refresh_crl(&mut self, force: bool) -> Result<(), AgentError> {
        let client = self.ca_client(None)?;
        let path = self.path(files::CRL);
        let etag = match std::fs::read(&path) {
            Ok(der) if !force && pki::check_crl_der(&der).is_ok() => Some(etag_of(&der)),
            _ => None,
        };
        if let Some(der) = conditional_get(&client, "/v1/crl", etag.as_deref()).await? {
            // A broken CRL makes etcd refuse every client: never write one.
            pki::check_crl_der(&der).map_err(|e| AgentError::BadAnswer {
                what: "CRL",
                reason: e.to_string(),
            })?;
            let unchanged = std::fs::read(&path).is_ok_and(|old| old == der);
            self.state.crl_etag = Some(etag_of(&der));
            if !unchanged {
                fsutil::write_atomic(&path, &der, fsutil::PUBLIC)?;
                tracing::info!(action = "crl", bytes = der.len(), "installed CRL");
            }
        }
        // One CRL per CA in the bundle, signed by it, for RFC 5280 checkers (etcd reads only
        // ca.crl): a failure here is logged, never fatal to etcd's own file.
        let bundle = read_bundle(&self.settings.dir)?;
        match crls::refresh_issuer_crls(&client, &self.settings.dir, &bundle).await {
            Ok(changed) if !changed.written.is_empty() || !changed.removed.is_empty() => {
                tracing::info!(
                    action = "issuer-crls",
                    written = changed.written.len(),
                    removed = changed.removed.len(),
                    "updated the per-CA CRLs"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot refresh the per-CA CRLs"),
        }
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

/// The first CA of `bundle` that is neither `pin` nor endorsed by it (through the server's
/// lineage), as a fingerprint; None when the pin vouches for all of them.
async fn stranger_in(
    client: &ApiClient,
    pin: &str,
    bundle: &[Vec<u8>],
    now: OffsetDateTime,
) -> Result<Option<String>, AgentError> {
    if bundle.iter().all(|c| pki::fingerprint(c) == pin) {
        return Ok(None);
    }
    let lineage = pki::pem_certificates(&String::from_utf8_lossy(
        &client.get("/v1/ca/lineage").await?.body,
    ))?;
    let vouched = crate::lineage::vouched_for(&[pin.to_string()], &lineage, now);
    Ok(bundle
        .iter()
        .find(|c| !vouched.contains(c))
        .map(|c| pki::fingerprint(c)))
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

fn pending_key(profile: &str) -> String {
    format!(".{profile}.key.pending")
}

/// The ETag the server sends for a body.
fn etag_of(body: &[u8]) -> String {
    format!("\"{}\"", pki::sha256_hex(body))
}

/// GET with If-None-Match: `None` when unchanged.
async fn conditional_get(
    client: &ApiClient,
    path: &str,
    etag: Option<&str>,
) -> Result<Option<Vec<u8>>, AgentError> {
    let headers: Vec<(hyper::header::HeaderName, String)> = etag
        .map(|e| vec![(hyper::header::IF_NONE_MATCH, e.to_string())])
        .unwrap_or_default();
    let response = ApiClient::check(
        client
            .send(hyper::Method::GET, path, None, &headers)
            .await?,
    )?;
    if response.status == hyper::StatusCode::NOT_MODIFIED {
        return Ok(None);
    }
    Ok(Some(response.body.to_vec()))
}

/// `etcd-ca agent status`: each file's subject, serial, expiry and next renewal, and the state.
pub fn status_report(dir: &Path, now: OffsetDateTime) -> Result<String, AgentError> {
    use std::fmt::Write;
    let mut out = String::new();
    let state: Option<AgentState> = std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(s) = &state {
        let _ = writeln!(
            out,
            "node {} (server {}, enrolled pinning CA {})",
            s.node, s.server, s.ca_fingerprint
        );
        let _ = writeln!(
            out,
            "  last success: {}",
            s.last_success.as_deref().unwrap_or("never")
        );
        if let Some(e) = &s.last_error {
            let _ = writeln!(out, "  last error:   {e}");
        }
        let _ = writeln!(out, "  renewals:     {}", s.renewals);
    }
    // What the agent trusts now: the bundle it installed (it pins those CAs, and those they
    // endorse in a rotation), not the fingerprint it was first given.
    let trusted = bundle_fingerprints(dir);
    if !trusted.is_empty() {
        let _ = writeln!(
            out,
            "  trusts:       {} ({})",
            trusted.join(", "),
            files::CA_BUNDLE
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| FsError::new("read", dir, e))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".crt"))
        .collect();
    names.sort();
    if names.is_empty() {
        let _ = writeln!(out, "no certificates in {}", dir.display());
    }
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| FsError::new("read", &path, e))?;
        for der in pki::pem_certificates(&text)? {
            let s = pki::CertSummary::from_der(&der)?;
            let _ = writeln!(out, "{}", path.display());
            let _ = writeln!(out, "  subject:      {}", s.subject);
            let _ = writeln!(out, "  serial:       {}", s.serial);
            let _ = writeln!(
                out,
                "  not after:    {} ({} days left)",
                rfc3339(s.not_after),
                s.days_left(now)
            );
            if !s.is_ca {
                let validity = Validity {
                    not_before: s.not_before,
                    not_after: s.not_after,
                };
                let due = renewal_due_at(validity, &s.serial);
                let jitter = schedule::jitter_from(s.serial.as_bytes());
                let state = match schedule::urgency(validity, jitter, now) {
                    Urgency::Calm => "ok",
                    Urgency::Due => "renewal due",
                    Urgency::Critical => "RENEWAL OVERDUE, EXPIRES SOON",
                    Urgency::Expired => "EXPIRED: needs a new token",
                };
                let _ = writeln!(out, "  next renewal: {} ({state})", rfc3339(due));
            }
        }
    }
    let crl = dir.join(files::CRL);
    match std::fs::read(&crl) {
        Ok(der) => {
            let verdict = match pki::check_crl_der(&der) {
                Ok(()) => "valid".to_string(),
                Err(e) => format!("INVALID: {e}"),
            };
            let _ = writeln!(out, "{}: {verdict}", crl.display());
        }
        Err(_) => {
            let _ = writeln!(
                out,
                "{}: missing (etcd refuses every client without it)",
                crl.display()
            );
        }
    }
    Ok(out)
}

/// A systemd unit running the agent with these settings.
pub fn systemd_unit(exe: &Path, args: &[String]) -> String {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| {
            if a.contains([' ', '"', '\'', '$']) {
                format!("\"{}\"", a.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                a.clone()
            }
        })
        .collect();
    format!(
        "[Unit]
Description=etcd-ca renewal agent: enrolls this etcd member and renews its certificates
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={} agent {}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=10s

[Install]
WantedBy=multi-user.target
",
        exe.display(),
        quoted.join(" ")
    )
}
