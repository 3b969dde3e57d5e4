//! The TLS flags an etcd member needs, pointing at the files etcd-ca writes into a PKI dir.
//!
//! One place knows the file names (`server.crt`, `peer.key`, `ca.crt`, `ca.crl`...), so the
//! CLI, the agent and the README agree. Pure formatting; nothing is read or written.

use std::path::Path;

/// File names inside a node's PKI dir (the names kubeadm users know).
pub mod files {
    pub const CA_BUNDLE: &str = "ca.crt";
    pub const CRL: &str = "ca.crl";

    pub fn certificate(profile: &str) -> String {
        format!("{profile}.crt")
    }

    pub fn key(profile: &str) -> String {
        format!("{profile}.key")
    }
}

/// How to print the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagFormat {
    /// `--flag=value`, one per line with a trailing backslash: paste into `ExecStart=`.
    Args,
    /// `ETCD_FLAG=value`, one per line: paste into `/etc/default/etcd`.
    Env,
    /// `--flag=value`, one per line and nothing else: for scripts (`$(etcd-ca etcd-flags ...)`).
    Lines,
    /// The same settings as YAML keys for `etcd --config-file` (which then reads no flags).
    Yaml,
}

/// The flags, as (flag name without dashes, value) pairs, in the order etcd's docs list them.
pub fn flags(node: &str, dir: &Path, peer_common_name: &str) -> Vec<(&'static str, String)> {
    let file = |name: String| dir.join(name).display().to_string();
    vec![
        ("name", node.to_string()),
        ("cert-file", file(files::certificate("server"))),
        ("key-file", file(files::key("server"))),
        ("trusted-ca-file", file(files::CA_BUNDLE.into())),
        ("client-cert-auth", "true".into()),
        ("client-crl-file", file(files::CRL.into())),
        ("peer-cert-file", file(files::certificate("peer"))),
        ("peer-key-file", file(files::key("peer"))),
        ("peer-trusted-ca-file", file(files::CA_BUNDLE.into())),
        ("peer-client-cert-auth", "true".into()),
        ("peer-crl-file", file(files::CRL.into())),
        ("peer-cert-allowed-cn", peer_common_name.to_string()),
    ]
}

/// The files the flags name that are missing from `dir` (empty when etcd can start with them).
pub fn missing_files(dir: &Path) -> Vec<String> {
    [
        files::certificate("server"),
        files::key("server"),
        files::certificate("peer"),
        files::key("peer"),
        files::CA_BUNDLE.to_string(),
        files::CRL.to_string(),
    ]
    .into_iter()
    .filter(|name| !dir.join(name).is_file())
    .collect()
}

/// The flags rendered for pasting.
pub fn render(node: &str, dir: &Path, peer_common_name: &str, format: FlagFormat) -> String {
    let pairs = flags(node, dir, peer_common_name);
    let mut out = String::new();
    match format {
        FlagFormat::Args => {
            let last = pairs.len().saturating_sub(1);
            for (i, (flag, value)) in pairs.iter().enumerate() {
                out.push_str(&format!("  --{flag}={value}"));
                out.push_str(if i == last { "\n" } else { " \\\n" });
            }
        }
        FlagFormat::Lines => {
            for (flag, value) in pairs {
                out.push_str(&format!("--{flag}={value}\n"));
            }
        }
        FlagFormat::Env => {
            for (flag, value) in pairs {
                let name = format!("ETCD_{}", flag.replace('-', "_").to_ascii_uppercase());
                out.push_str(&format!("{name}={value}\n"));
            }
        }
        FlagFormat::Yaml => out = yaml(node, dir, peer_common_name),
    }
    out
}

/// The settings as etcd's config file spells them. etcd's documented `*-transport-security`
/// sections have no key for the CRL files or the peer CN; etcd's loader also reads its own
/// `ClientTLSInfo`/`PeerTLSInfo` fields, which carry them (checked with etcd 3.4 by the test
/// suite: a revoked client is refused, a client certificate is refused on the peer port).
fn yaml(node: &str, dir: &Path, peer_common_name: &str) -> String {
    let file = |name: String| quote(&dir.join(name).display().to_string());
    let (ca, crl) = (file(files::CA_BUNDLE.into()), file(files::CRL.into()));
    let transport = |profile: &str| {
        format!(
            "  cert-file: {}\n  key-file: {}\n  client-cert-auth: true\n  trusted-ca-file: {ca}\n",
            file(files::certificate(profile)),
            file(files::key(profile)),
        )
    };
    format!(
        "# TLS settings of etcd member {node} for `etcd --config-file` (etcd-ca etcd-flags --format yaml).\n\
         # etcd reads no command-line flags when given a config file: merge these keys into it.\n\
         name: {}\n\
         client-transport-security:\n{}\
         peer-transport-security:\n{}\
         # The CRL files and the peer CN have no key in the sections above; etcd reads them here.\n\
         ClientTLSInfo:\n  CRLFile: {crl}\n\
         PeerTLSInfo:\n  CRLFile: {crl}\n  AllowedCN: {}\n",
        quote(node),
        transport("server"),
        transport("peer"),
        quote(peer_common_name),
    )
}

/// A YAML single-quoted scalar (any text; a quote is doubled).
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_point_at_the_pki_dir_and_lock_peers_to_the_peer_cn() {
        let text = render(
            "n1",
            Path::new("/etc/etcd/pki"),
            "etcd-peer",
            FlagFormat::Args,
        );
        assert!(text.contains("--cert-file=/etc/etcd/pki/server.crt \\\n"));
        assert!(text.contains("--client-crl-file=/etc/etcd/pki/ca.crl"));
        assert!(text.ends_with("--peer-cert-allowed-cn=etcd-peer\n"));
        let env = render("n1", Path::new("/p"), "etcd-peer", FlagFormat::Env);
        assert!(env.contains("ETCD_PEER_CLIENT_CERT_AUTH=true\n"));
        assert!(env.contains("ETCD_NAME=n1\n"));
        let yaml = render("n1", Path::new("/it's"), "etcd-peer", FlagFormat::Yaml);
        assert!(yaml.contains("client-transport-security:\n  cert-file: '/it''s/server.crt'\n"));
        assert!(
            yaml.contains("PeerTLSInfo:\n  CRLFile: '/it''s/ca.crl'\n  AllowedCN: 'etcd-peer'\n")
        );
    }
}
