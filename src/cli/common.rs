//! Flags several commands share: the data dir and its passphrase, how a new CA key is kept,
//! the running server to talk to instead (`--server`, its pin, the admin token), a node's names.

use super::*;

#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The CA's data dir (database, CA keys, policy) [default: /var/lib/etcd-ca].
    #[arg(long, env = "ETCD_CA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// File holding the passphrase of the CA keys (or set ETCD_CA_PASSPHRASE).
    #[arg(long, env = "ETCD_CA_PASSPHRASE_FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// A PostgreSQL database several CA servers share (postgres://USER[:PASSWORD]@HOST:PORT/DB)
    /// instead of the data dir's SQLite file; the data dir then holds only this host's files.
    #[arg(
        long,
        env = "ETCD_CA_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database: Option<String>,
}

/// Where the CA lives when neither --data-dir nor ETCD_CA_DATA_DIR names it.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/etcd-ca";

impl DataDirArg {
    /// The data dir: the one named, else the default.
    pub fn path(&self) -> &Path {
        self.data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR))
    }

    /// The passphrase, from --passphrase-file or ETCD_CA_PASSPHRASE, if one was given.
    pub(super) fn passphrase(&self) -> Result<Option<Passphrase>, CliError> {
        if let Some(file) = &self.passphrase_file {
            let text = zeroize::Zeroizing::new(read_text(file)?);
            return Ok(Some(Passphrase::new(&text)?));
        }
        match std::env::var("ETCD_CA_PASSPHRASE") {
            Ok(text) => Ok(Some(Passphrase::new(&zeroize::Zeroizing::new(text))?)),
            Err(_) => Ok(None),
        }
    }

    /// The shared database named by --database, if any.
    pub(super) fn database(&self) -> Result<Option<StoreConfig>, CliError> {
        match &self.database {
            None => Ok(None),
            Some(url) => Ok(Some(
                StoreConfig::from_url_or(Some(url), self.path().join("etcd-ca.db"))
                    .map_err(|e| CliError::Usage(e.to_string()))?,
            )),
        }
    }

    /// Opens the data dir with its passphrase (a shared database only if its schema is
    /// current: no migration runs).
    pub(super) async fn open(&self) -> Result<Authority, CliError> {
        self.open_with(Migrations::Check).await
    }

    /// Opens the data dir with its passphrase; on a shared database, `migrations` says
    /// whether missing migrations are applied.
    pub(super) async fn open_with(&self, migrations: Migrations) -> Result<Authority, CliError> {
        if let Some(config) = self.database()? {
            let authority = Authority::open_shared(self.path(), &config, migrations).await?;
            return match self.passphrase() {
                Ok(passphrase) => Ok(authority.with_passphrase(passphrase)),
                Err(e) => {
                    authority.close().await;
                    Err(e)
                }
            };
        }
        // No dir named and none at the default place: say how to name one, not how to create
        // a second CA.
        if self.data_dir.is_none() && DataDir::new(self.path()).existing_ca_marker().is_none() {
            return Err(CliError::Usage(format!(
                "no CA in {}, the default data dir: give --data-dir DIR (or ETCD_CA_DATA_DIR) \
                 where the CA lives, or --server URL to use a running CA server",
                self.path().display()
            )));
        }
        let passphrase = self.passphrase()?;
        Ok(Authority::open(self.path())
            .await?
            .with_passphrase(passphrase))
    }

    /// For a new CA: when --passphrase-file names a file that does not exist yet, writes a
    /// strong random passphrase there (only its owner can read it), so one command creates a
    /// CA. Returns the file it wrote.
    pub(super) fn new_passphrase_file(
        &self,
        unencrypted: bool,
    ) -> Result<Option<PathBuf>, CliError> {
        match &self.passphrase_file {
            Some(file) if !file.exists() && !unencrypted => {
                let (_, text) = Passphrase::generate()?;
                fsutil::write_new(
                    file,
                    format!("{}\n", text.as_str()).as_bytes(),
                    fsutil::PRIVATE,
                )?;
                eprintln!(
                    "Wrote a new random passphrase for the CA keys to {} (mode 0600): keep a copy somewhere safe.",
                    file.display()
                );
                Ok(Some(file.clone()))
            }
            _ => Ok(None),
        }
    }

    /// Removes a passphrase file [`Self::new_passphrase_file`] wrote for a CA that was then
    /// not created.
    pub(super) fn forget_passphrase_file(file: Option<&Path>) {
        if let Some(file) = file {
            let _ = std::fs::remove_file(file);
        }
    }

    /// How `init` (or a first `serve`) keeps the new CA key.
    pub(super) fn key_protection(
        &self,
        unencrypted: bool,
        iterations: u32,
    ) -> Result<KeyProtection, CliError> {
        match (self.passphrase()?, unencrypted) {
            // The flag on the command line is the operator's explicit choice; a passphrase
            // may come from the environment without them thinking of it.
            (Some(_), true) => {
                eprintln!(
                    "warning: --insecure-unencrypted-key: the CA key is stored in the clear; the passphrase given is not used for it"
                );
                Ok(KeyProtection::Unencrypted)
            }
            (Some(p), false) => Ok(KeyProtection::Passphrase(p, iterations)),
            (None, true) => Ok(KeyProtection::Unencrypted),
            (None, false) => Err(CliError::Usage(
                "the CA key is encrypted with a passphrase: give one with --passphrase-file FILE, ETCD_CA_PASSPHRASE_FILE or ETCD_CA_PASSPHRASE \
                 (or pass --insecure-unencrypted-key to store it in the clear)"
                    .into(),
            )),
        }
    }
}

/// How a new CA key is protected.
#[derive(Debug, Args)]
pub struct KeyProtectionArgs {
    /// Store the CA key unencrypted (anyone who can read the file can sign as this CA).
    #[arg(long)]
    pub insecure_unencrypted_key: bool,
    /// PBKDF2 iterations when sealing the CA key.
    #[arg(long, default_value_t = crate::authority::keyfile::DEFAULT_ITERATIONS, hide = true)]
    pub kdf_iterations: u32,
}

/// Talk to a running CA server instead of opening the data dir.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The CA server, e.g. https://ca.example:8443. Without it, the command opens --data-dir.
    /// Several servers of one CA: repeat it or separate them with commas; a request moves on to
    /// the next when one cannot be reached or answers 5xx (never after a refusal).
    #[arg(long, env = "ETCD_CA_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// File holding an admin token (from `etcd-ca admin-token create`).
    #[arg(long, env = "ETCD_CA_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Trust the server whose CA has this fingerprint (sha256:HEX, printed by `serve` and `init`).
    #[arg(long, env = "ETCD_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// Trust the server's CA from this PEM file instead.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

/// A node's addresses and DNS names: the most its certificates may carry. When issuing without
/// them, the names registered for the node are used.
#[derive(Debug, Args)]
pub struct NodeNamesArgs {
    /// An address of the node (repeat).
    #[arg(long = "ip")]
    pub ips: Vec<IpAddr>,
    /// A DNS name of the node (repeat).
    #[arg(long = "dns")]
    pub dns_names: Vec<DnsName>,
}

impl NodeNamesArgs {
    /// The names as the JSON strings the API takes.
    pub(super) fn json(&self) -> (Vec<String>, Vec<String>) {
        (
            self.ips.iter().map(|i| i.to_string()).collect(),
            self.dns_names.iter().map(|d| d.to_string()).collect(),
        )
    }
}

impl RemoteArgs {
    /// The servers given, as the client takes them (comma-separated); None for none.
    pub(super) fn server_list(&self) -> Option<String> {
        (!self.server.is_empty()).then(|| self.server.join(","))
    }

    /// An API client when --server was given.
    pub(super) fn client(&self) -> Result<Option<crate::client::ApiClient>, CliError> {
        let Some(url) = self.server_list() else {
            return Ok(None);
        };
        let url = &url;
        let trust = match (&self.ca_fingerprint, &self.ca_file) {
            (Some(fp), _) => crate::client::Trust::Fingerprint(fingerprint_arg(fp)?),
            (None, Some(file)) => crate::client::Trust::Bundle(
                crate::pki::pem_certificates(&read_text(file)?).map_err(|source| {
                    CliError::Certificate {
                        path: file.clone(),
                        source,
                    }
                })?,
            ),
            (None, None) => {
                return Err(CliError::Usage(
                    "--server needs --ca-fingerprint sha256:... or --ca-file to know it talks to the right CA".into(),
                ))
            }
        };
        // A --server the client cannot use at all (not https, no host) is a wrong flag.
        let mut client = crate::client::ApiClient::new(url, trust, None)
            .map_err(|e| CliError::Usage(format!("--server {url}: {e}")))?;
        if let Some(file) = &self.admin_token_file {
            client = client.with_bearer(read_text(file)?.trim().to_string());
        }
        Ok(Some(client))
    }

    /// [`Self::client`] for the admin API: --server needs --admin-token-file too.
    pub(super) fn admin_client(&self) -> Result<Option<crate::client::ApiClient>, CliError> {
        let client = self.client()?;
        if client.is_some() && self.admin_token_file.is_none() {
            return Err(CliError::Usage(
                "--server needs --admin-token-file FILE (an admin token from `etcd-ca admin-token create`) for this command".into(),
            ));
        }
        Ok(client)
    }
}

/// An etcd member's URL as etcd advertises it: `https://HOST:PORT`.
pub(super) fn member_url(text: &str) -> Result<String, String> {
    let uri: hyper::Uri = text
        .parse()
        .map_err(|_| format!("{text:?} is not a URL; expected https://HOST:PORT"))?;
    match (uri.scheme_str(), uri.host(), uri.port_u16(), uri.path()) {
        (Some("https"), Some(_), Some(_), "" | "/") => Ok(text.to_string()),
        (Some("https"), Some(_), None, _) => Err(format!(
            "{text:?} has no port; expected https://HOST:PORT (etcd's are 2379 and 2380)"
        )),
        _ => Err(format!(
            "{text:?}: expected https://HOST:PORT (the member's TLS client or peer URL)"
        )),
    }
}

/// A `--ca-fingerprint`, normalised (openssl's colon form is taken too).
pub(super) fn fingerprint_arg(text: &str) -> Result<String, CliError> {
    crate::pki::parse_fingerprint(text).ok_or_else(|| {
        CliError::Usage(format!(
            "--ca-fingerprint {text:?}: expected sha256: and 64 hex digits (or openssl's \
             SHA256 Fingerprint=AB:CD:..., as `openssl x509 -noout -fingerprint -sha256` prints)"
        ))
    })
}
