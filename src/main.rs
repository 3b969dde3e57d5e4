//! The `etcd-ca` binary: parse arguments, set up logging, run the command, print the error
//! chain on one line and exit non-zero on failure.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a busy server frees and reallocates TLS buffers, SQLite
/// pages and JSON bodies on two threads at once, where glibc spent about a tenth of the CPU
/// (profile in the README's Performance section). Its v2 with no transparent huge pages: v3
/// and huge pages kept what each thread once used (a 2 MiB page per touched region, purged
/// only when that thread allocates again), so a server's RSS grew by each large answer's size
/// per thread that built one: 119 -> 83 MiB peak at 1M certificates, the backup CLI's
/// 58-66 -> 25 MiB, CPU per certificate unchanged (scale bench; README "At scale").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = etcd_ca::cli::Cli::parse();
    // The server logs what it does; one-shot commands print results and log only trouble.
    let default_level = match cli.command {
        etcd_ca::cli::Command::Serve(_) | etcd_ca::cli::Command::Agent(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ETCD_CA_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // Keys, the passphrase and tokens live in this process's memory: keep them out of core
    // files and away from ptrace.
    if let Err(e) = etcd_ca::hardening::forbid_core_dumps() {
        tracing::warn!(error = %e, "cannot make this process non-dumpable");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(etcd_ca::cli::run(cli)) {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", etcd_ca::error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
