//! `etcd-ca agent --print-unit` runs the agent with every flag it was given: none is dropped
//! (a unit without `--etcd-endpoint` silently loses the health gate a CA rotation waits on), a
//! literal token is never written into the unit, and the printed command line parses back to
//! the same unit.

use std::collections::BTreeMap;
use std::process::Command;

use crate::helpers::{etcd_ca, ETCD_CA};

/// Every agent flag with a value that is not its default (None: a switch). Values with spaces
/// and quotes check the unit's quoting.
const EVERY_FLAG: &[(&str, Option<&str>)] = &[
    ("--server", Some("https://ca.example:8443")),
    (
        "--ca-fingerprint",
        Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    ),
    ("--node", Some("n7")),
    ("--dir", Some("/srv/etcd pki")),
    ("--token-file", Some("/run/etcd-ca/bootstrap token")),
    ("--profiles", Some("server,peer,client")),
    (
        "--on-renew",
        Some("chown etcd: /srv/*.key && logger 'renewed'"),
    ),
    ("--on-trust-change", Some("systemctl restart \"etcd\"")),
    ("--etcd-endpoint", Some("https://10.0.0.17:2379")),
    ("--etcd-peer-endpoint", Some("https://10.0.0.17:2380")),
    ("--textfile-dir", Some("/var/lib/prometheus/node exporter")),
    ("--refresh-interval", Some("7m")),
    ("--backoff", Some("3s")),
    ("--backoff-max", Some("11m")),
    ("--once", None),
    ("--renew-now", None),
];

/// Flags that are not carried as such: `--print-unit` itself, and `--token`, which becomes
/// `--token-file` (checked on its own below).
const NOT_CARRIED: &[&str] = &["--help", "--version", "--print-unit", "--token"];

fn every_flag_args() -> Vec<String> {
    EVERY_FLAG
        .iter()
        .flat_map(|(flag, value)| std::iter::once(flag.to_string()).chain(value.map(String::from)))
        .collect()
}

/// `etcd-ca agent ARGS... --print-unit`: the unit text.
fn print_unit(args: &[String]) -> String {
    let mut all = vec!["agent".to_string()];
    all.extend_from_slice(args);
    all.push("--print-unit".into());
    etcd_ca(&all).ok().stdout
}

/// The `ExecStart=` command line split into words as systemd does for what the unit holds:
/// whitespace separates words, double quotes group, `\"` and `\\` escape inside them.
fn exec_start(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart= line in:\n{unit}"));
    let mut words = Vec::new();
    let mut chars = line.chars();
    let mut word: Option<String> = None;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            '\\' if quoted => word
                .get_or_insert_with(String::new)
                .push(chars.next().expect("an escaped character")),
            c if c.is_whitespace() && !quoted => words.extend(word.take()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "unterminated quote in {line:?}");
    words.extend(word);
    words
}

/// The agent's arguments in an ExecStart line (after `/path/etcd-ca agent`).
fn agent_args(unit: &str) -> Vec<String> {
    let words = exec_start(unit);
    assert_eq!(words.get(1).map(String::as_str), Some("agent"), "{words:?}");
    words[2..].to_vec()
}

/// Flag words as flag -> values: `--flag=value`, `--flag value` or a `--switch`.
fn by_flag(args: &[String]) -> BTreeMap<String, Vec<Option<String>>> {
    let mut flags: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    let mut words = args.iter().peekable();
    while let Some(word) = words.next() {
        assert!(word.starts_with("--"), "not a flag: {word:?} in {args:?}");
        let (flag, value) = match word.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (
                word.clone(),
                words.next_if(|next| !next.starts_with("--")).cloned(),
            ),
        };
        flags.entry(flag).or_default().push(value);
    }
    flags
}

#[test]
fn the_test_sets_every_flag_the_agent_has() {
    let help = etcd_ca(["agent", "--help"]).ok().stdout;
    let listed: Vec<&str> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .filter(|w| w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(listed.contains(&"--etcd-endpoint"), "{help}");
    for flag in listed {
        assert!(
            NOT_CARRIED.contains(&flag) || EVERY_FLAG.iter().any(|(f, _)| *f == flag),
            "agent flag {flag} is not in EVERY_FLAG: add it there (and to the unit)"
        );
    }
}

#[test]
fn the_unit_carries_every_flag_and_parses_back_to_itself() {
    let unit = print_unit(&every_flag_args());
    let carried = agent_args(&unit);
    let flags = by_flag(&carried);
    for (flag, value) in EVERY_FLAG {
        assert_eq!(
            flags.get(*flag),
            Some(&vec![value.map(String::from)]),
            "{flag} is not carried as given; ExecStart words: {carried:?}"
        );
    }
    assert_eq!(
        flags.len(),
        EVERY_FLAG.len(),
        "only the flags given: {carried:?}"
    );
    assert!(!flags.contains_key("--print-unit"));

    // Round trip: the agent accepts the unit's own arguments and prints the same unit.
    let again = print_unit(&carried);
    assert_eq!(exec_start(&again), exec_start(&unit), "{again}");
    assert!(exec_start(&unit)[0].ends_with("etcd-ca"), "{unit}");
}

#[test]
fn a_literal_token_becomes_a_token_file_and_environment_values_are_carried() {
    let token = "etcdca_0123456789abcdef_notreallyasecret";
    let run = Command::new(ETCD_CA)
        .args([
            "agent",
            "--print-unit",
            "--node",
            "n1",
            "--dir",
            "/etc/etcd/pki",
        ])
        .args(["--token", token])
        .env("ETCD_CA_SERVER", "https://ca.from-env:8443")
        .env(
            "ETCD_CA_FINGERPRINT",
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        )
        .env_remove("ETCD_CA_TOKEN")
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let unit = String::from_utf8(run.stdout).unwrap();
    assert!(
        !unit.contains(token),
        "the token leaked into the unit:\n{unit}"
    );
    let flags = by_flag(&agent_args(&unit));
    assert_eq!(
        flags["--token-file"],
        [Some("/etc/etcd-ca/token".to_string())]
    );
    assert_eq!(
        flags["--server"],
        [Some("https://ca.from-env:8443".to_string())],
        "a unit does not have the shell's environment"
    );
    assert!(flags.contains_key("--ca-fingerprint"));
    assert!(!flags.contains_key("--token"));
}
