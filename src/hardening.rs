//! Process hardening: the server holds the CA keys and the passphrase in memory, the agent its
//! node keys and a bootstrap token; neither may end up in a core dump or be read by another
//! process of the same user through ptrace.

/// Marks this process non-dumpable (`PR_SET_DUMPABLE` 0): no core file, and `/proc/PID/mem`
/// and ptrace are closed to other processes of the same user.
pub fn forbid_core_dumps() -> Result<(), std::io::Error> {
    nix::sys::prctl::set_dumpable(false).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn the_process_is_no_longer_dumpable() {
        super::forbid_core_dumps().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
