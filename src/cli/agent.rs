//! `etcd-ca agent`: its flags (validated into the agent's settings), `--print-unit`, and
//! `agent status`.

use super::*;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCommand {
    #[command(subcommand)]
    pub status: Option<AgentStatusCommand>,
    #[command(flatten)]
    pub run: AgentArgs,
}

#[derive(Debug, Subcommand)]
pub enum AgentStatusCommand {
    /// Show each certificate in a PKI dir, its expiry and next renewal, and the agent's state.
    Status {
        /// The PKI dir the agent manages.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The CA server, e.g. https://ca.example:8443. Several servers of one CA: repeat it or
    /// separate them with commas; the agent moves on to the next when one cannot be reached or
    /// answers 5xx (never after a refusal).
    #[arg(long, env = "ETCD_CA_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// The CA's fingerprint (sha256:HEX): the only way the agent trusts the server at first.
    #[arg(long, env = "ETCD_CA_FINGERPRINT")]
    pub ca_fingerprint: Option<String>,
    /// This node's name (the etcd member name the token was created for).
    #[arg(long)]
    pub node: Option<NodeName>,
    /// The PKI dir etcd reads (ca.crt, ca.crl, server.crt/.key, peer.crt/.key...).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// A bootstrap token (prefer --token-file: command lines are visible to other users).
    /// --print-unit never writes it into the unit: the unit reads --token-file (default
    /// /etc/etcd-ca/token) instead.
    #[arg(
        long,
        conflicts_with = "token_file",
        env = "ETCD_CA_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding a bootstrap token; re-read whenever one is needed.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Profiles to keep, comma-separated (`--profile` is taken too).
    #[arg(
        long,
        alias = "profile",
        value_delimiter = ',',
        default_value = "server,peer"
    )]
    pub profiles: Vec<String>,
    /// Command run (sh -c) after certificates change; ETCD_CA_CHANGED_FILES lists them.
    #[arg(long)]
    pub on_renew: Option<String>,
    /// Command run after the trust bundle changes (etcd reads it only at start: restart it).
    /// Runs while holding the cluster-wide restart lease: one member at a time.
    #[arg(long)]
    pub on_trust_change: Option<String>,
    /// The local member's client URL (https://IP:2379): after a restart, wait until it is
    /// healthy with the new bundle before the next member may restart.
    #[arg(long, value_parser = super::common::member_url)]
    pub etcd_endpoint: Option<String>,
    /// The local member's peer URL (https://IP:2380). With --etcd-endpoint, the agent reads
    /// which certificate the member really serves on each port and reports it, so a member
    /// that never picked up its renewed files is flagged (`etcd-ca check`, web view, metrics).
    #[arg(long, value_parser = super::common::member_url)]
    pub etcd_peer_endpoint: Option<String>,
    /// Write this node's certificates' expiry for node_exporter's textfile collector into
    /// DIR (etcd-ca-agent-NODE.prom), after every pass: visible even while the CA is down.
    #[arg(long, value_name = "DIR")]
    pub textfile_dir: Option<PathBuf>,
    /// Enroll or renew what is needed, refresh bundle and CRL, then exit.
    #[arg(long)]
    pub once: bool,
    /// Renew every certificate now, even if not due (as SIGHUP does to a running agent).
    #[arg(long)]
    pub renew_now: bool,
    /// How often to check the trust bundle and the CRL.
    #[arg(long, default_value = "5m")]
    pub refresh_interval: HumanDuration,
    /// First retry delay after a failure (it doubles, up to --backoff-max).
    #[arg(long, default_value = "1s")]
    pub backoff: HumanDuration,
    #[arg(long, default_value = "5m")]
    pub backoff_max: HumanDuration,
    /// Print a systemd unit running the agent with every flag given here (and the values taken
    /// from ETCD_CA_* variables), and exit. A --token is replaced by --token-file.
    #[arg(long)]
    pub print_unit: bool,
}

impl AgentArgs {
    /// The validated settings, or the first missing or bad flag.
    pub(super) fn settings(&self) -> Result<crate::agent::AgentSettings, CliError> {
        let need = |flag: &str| CliError::Usage(format!("etcd-ca agent needs --{flag}"));
        let fingerprint = self
            .ca_fingerprint
            .clone()
            .ok_or_else(|| need("ca-fingerprint"))?;
        let fingerprint = fingerprint_arg(&fingerprint)?;
        if self.profiles.is_empty() {
            return Err(need("profiles"));
        }
        Ok(crate::agent::AgentSettings {
            server: Some(self.server.join(","))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| need("server"))?,
            ca_fingerprint: fingerprint,
            node: self.node.clone().ok_or_else(|| need("node"))?,
            dir: self.dir.clone().ok_or_else(|| need("dir"))?,
            token: match (&self.token, &self.token_file) {
                (Some(t), _) => Some(crate::agent::TokenSource::Literal(t.clone())),
                (None, Some(f)) => Some(crate::agent::TokenSource::File(f.clone())),
                (None, None) => None,
            },
            profiles: self.profiles.clone(),
            on_renew: self.on_renew.clone(),
            on_trust_change: self.on_trust_change.clone(),
            etcd_endpoint: self.etcd_endpoint.clone(),
            etcd_peer_endpoint: self.etcd_peer_endpoint.clone(),
            textfile_dir: self.textfile_dir.clone(),
            once: self.once,
            renew_now: self.renew_now,
            refresh_interval: self.refresh_interval.as_std(),
            backoff_base: self.backoff.as_std(),
            backoff_cap: self.backoff_max.as_std(),
        })
    }

    /// The flags of the unit's `ExecStart`: every flag this agent was given, from the parsed
    /// values (so those read from the environment too), except `--print-unit` and a literal
    /// token, which the unit reads from `--token-file` ([`UNIT_TOKEN_FILE`] unless given).
    pub(super) fn unit_args(&self) -> Vec<String> {
        // No `..`: a new flag does not compile until it is decided here how the unit carries it.
        let Self {
            server,
            ca_fingerprint,
            node,
            dir,
            token: _,
            token_file,
            profiles,
            on_renew,
            on_trust_change,
            etcd_endpoint,
            etcd_peer_endpoint,
            textfile_dir,
            once,
            renew_now,
            refresh_interval,
            backoff,
            backoff_max,
            print_unit: _,
        } = self;
        let token_file = token_file
            .as_ref()
            .map_or_else(|| UNIT_TOKEN_FILE.into(), |f| f.display().to_string());
        let valued = [
            ("--server", Some(server.join(",")).filter(|s| !s.is_empty())),
            ("--ca-fingerprint", ca_fingerprint.clone()),
            ("--node", node.as_ref().map(ToString::to_string)),
            ("--dir", dir.as_ref().map(|d| d.display().to_string())),
            ("--token-file", Some(token_file)),
            ("--profiles", Some(profiles.join(","))),
            ("--on-renew", on_renew.clone()),
            ("--on-trust-change", on_trust_change.clone()),
            ("--etcd-endpoint", etcd_endpoint.clone()),
            ("--etcd-peer-endpoint", etcd_peer_endpoint.clone()),
            (
                "--textfile-dir",
                textfile_dir.as_ref().map(|d| d.display().to_string()),
            ),
            ("--refresh-interval", Some(refresh_interval.to_string())),
            ("--backoff", Some(backoff.to_string())),
            ("--backoff-max", Some(backoff_max.to_string())),
        ];
        let switches = [("--once", *once), ("--renew-now", *renew_now)];
        // `--flag=value`, one word each: a value starting with `-` stays a value.
        valued
            .into_iter()
            .filter_map(|(flag, value)| Some(format!("{flag}={}", value?)))
            .chain(
                switches
                    .into_iter()
                    .filter(|(_, on)| *on)
                    .map(|(flag, _)| flag.to_string()),
            )
            .collect()
    }
}

/// Where a printed unit reads the bootstrap token when no --token-file was given.
pub(super) const UNIT_TOKEN_FILE: &str = "/etc/etcd-ca/token";

pub(super) async fn agent(args: AgentArgs) -> Result<ExitCode, CliError> {
    let settings = args.settings()?;
    if args.print_unit {
        let exe =
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/etcd-ca"));
        write!(
            stdout(),
            "{}",
            crate::agent::systemd_unit(&exe, &args.unit_args())
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    crate::agent::Agent::new(settings)?.run().await?;
    Ok(ExitCode::SUCCESS)
}
