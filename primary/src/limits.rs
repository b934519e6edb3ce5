//! Process limits raised at start.

/// Open file descriptors one database costs the replicator, at most: six
/// while it is quiet (the database and its WAL through the capture and
/// checkpoint connections, the shared index, the database file for page
/// reads), plus its metadata database (three) and a WAL scan (one) while
/// the app commits.
pub const DESCRIPTORS_PER_DATABASE: u64 = 10;

/// Descriptors the process needs besides its databases (stores' sockets,
/// the metrics listener, standard streams, the runtime).
const DESCRIPTORS_BESIDES: u64 = 64;

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does at start: a replicator of many databases passes the usual soft
/// limit of 1,024 long before the hard one (often 524,288), and the limit
/// is a ceiling the kernel enforces only when asked to. Returns the soft
/// limit before and after.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one `rlimit` into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_max))
}

/// Raises the open-files limit for `databases` databases and says in the
/// log what it did, and what to do when even the hard limit is too low.
pub fn prepare_for(databases: usize) {
    let needed = databases as u64 * DESCRIPTORS_PER_DATABASE + DESCRIPTORS_BESIDES;
    match raise_open_files_limit() {
        Ok((before, now)) => {
            if now > before {
                tracing::debug!(before, now, "raised the soft limit on open files to the hard limit");
            }
            if now < needed {
                tracing::warn!(
                    limit = now,
                    needed,
                    databases,
                    "the open-files limit is too low for this many databases: raise it (LimitNOFILE= in the \
                     systemd unit, `ulimit -n` in a shell)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not read or raise the open-files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
        let (_, now) = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        assert_eq!(now, limit.rlim_max);
    }
}
