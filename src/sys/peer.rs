//! Who is on the other end of a connected Unix socket, beyond
//! `SO_PEERCRED`: a pidfd of the peer process (`SO_PEERPIDFD`, immune to
//! pid reuse) and its supplementary groups (`SO_PEERGROUPS`). Both are the
//! credentials the kernel recorded at `connect` (or `socketpair`), not
//! what the peer has now.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

/// Supplementary groups asked for on the first try; most processes have
/// fewer, so one call usually does.
const GROUPS_FIRST_TRY: usize = 32;

/// A pidfd of the process that connected the peer end of `fd`
/// (`SO_PEERPIDFD`, Linux 6.5+), close-on-exec (the kernel always makes
/// pidfds so). Unlike a pid from `SO_PEERCRED`, it cannot come to name
/// another process once the peer exits: signal it with `pidfd_send_signal`,
/// poll it for the peer's exit, or read its `Pid:` in
/// `/proc/self/fdinfo/<fd>`.
///
/// `Ok(None)` where the kernel has no `SO_PEERPIDFD` (`ENOPROTOOPT`, before
/// 6.5) or cannot make a pidfd of the peer (`EINVAL`: the peer is not a
/// thread-group leader, or it has already exited).
///
/// # Errors
///
/// `getsockopt`'s other errors: `ENOTSOCK`, `ENOTCONN`, `ENODATA` (no peer
/// credentials recorded), `EMFILE`, ...
pub fn peer_pidfd(fd: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    let mut pidfd: libc::c_int = -1;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pidfd` is writable for `len` bytes, `len` is writable, and
    // the socket is borrowed, so open, for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            ptr::addr_of_mut!(pidfd).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOPROTOOPT | libc::EINVAL) => Ok(None),
            _ => Err(e),
        };
    }
    if len as usize != mem::size_of::<libc::c_int>() || pidfd < 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short SO_PEERPIDFD",
        ));
    }
    // SAFETY: the kernel just installed this descriptor for us; nothing
    // else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(pidfd) }))
}

/// The supplementary groups of the process that connected the peer end of
/// `fd` (`SO_PEERGROUPS`, Linux 4.13+), as the kernel keeps them (sorted);
/// the primary group is `SO_PEERCRED`'s `gid` and may or may not be among
/// them.
///
/// The kernel answers `ERANGE` with the length it needs when the buffer is
/// too small: the buffer grows to that and the call is repeated.
///
/// # Errors
///
/// `getsockopt`'s error: `ENOTSOCK`, `ENOPROTOOPT` (before 4.13),
/// `ENODATA` (no peer credentials recorded), ...
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    groups_from(fd, GROUPS_FIRST_TRY)
}

/// [`peer_groups`], asking for `first_try` groups first.
fn groups_from(fd: BorrowedFd<'_>, first_try: usize) -> io::Result<Vec<u32>> {
    const GID_LEN: usize = mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; first_try];
    loop {
        let mut len = (groups.len() * GID_LEN) as libc::socklen_t;
        // SAFETY: `groups` is writable for `len` bytes (its length in
        // gids), `len` is writable, and the socket is borrowed, so open,
        // for the call.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                // `len` is what the kernel needs; never shrink, so a
                // confused answer cannot loop us at one size.
                let need = (len as usize).div_ceil(GID_LEN);
                let grown = need.max(groups.len() * 2).max(1);
                groups.resize(grown, 0);
                continue;
            }
            return Err(e);
        }
        groups.truncate(len as usize / GID_LEN);
        return Ok(groups);
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    /// The value of `key:` in a `/proc` status-style file.
    fn proc_field(path: &str, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(path).expect("read /proc");
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }

    #[test]
    fn pidfd_of_a_socket_pair_is_our_own_process() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let Some(pidfd) = peer_pidfd(a.as_fd()).expect("SO_PEERPIDFD") else {
            eprintln!("no SO_PEERPIDFD on this kernel: None, as promised");
            return;
        };
        let fdinfo = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
        let pid = proc_field(&fdinfo, "Pid").expect("a pidfd's fdinfo has Pid:");
        assert_eq!(pid, std::process::id().to_string());
        let flags = proc_field(&fdinfo, "flags").expect("fdinfo flags");
        let flags = u32::from_str_radix(&flags, 8).expect("octal flags");
        assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "close-on-exec");
        // The other end sees the same process.
        assert!(peer_pidfd(b.as_fd()).expect("SO_PEERPIDFD").is_some());
    }

    #[test]
    fn pidfd_of_a_non_socket_is_an_error() {
        let file = std::fs::File::open("/dev/null").expect("open");
        let err = peer_pidfd(file.as_fd()).expect_err("not a socket");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    }

    #[test]
    fn groups_of_a_socket_pair_are_ours() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let mut got = peer_groups(a.as_fd()).expect("SO_PEERGROUPS");
        let mut want: Vec<u32> = proc_field("/proc/self/status", "Groups")
            .expect("Groups: line")
            .split_whitespace()
            .map(|g| g.parse().expect("a gid"))
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        // Too small a buffer at first: ERANGE, grow, retry.
        let mut grown = groups_from(a.as_fd(), 0).expect("SO_PEERGROUPS, grown");
        grown.sort_unstable();
        assert_eq!(grown, want);
    }

    #[test]
    fn many_groups_grow_the_buffer() {
        // Credentials are per thread in the kernel, and glibc's wrapper
        // would change every thread's: the raw syscall changes only this
        // one's, and socketpair records them.
        let want: Vec<libc::gid_t> = (1000..1000 + 3 * GROUPS_FIRST_TRY as u32).collect();
        let pair = std::thread::spawn(move || {
            // SAFETY: `want` holds `want.len()` gids, only read by the call.
            let rc = unsafe { libc::syscall(libc::SYS_setgroups, want.len(), want.as_ptr()) };
            (rc == 0).then(|| UnixStream::pair().expect("socketpair"))
        })
        .join()
        .expect("thread");
        let Some((a, _b)) = pair else {
            eprintln!("cannot setgroups here (no CAP_SETGID): growth untested");
            return;
        };
        let want: Vec<u32> = (1000..1000 + 3 * GROUPS_FIRST_TRY as u32).collect();
        assert_eq!(peer_groups(a.as_fd()).expect("SO_PEERGROUPS"), want);
        assert_eq!(groups_from(a.as_fd(), 0).expect("from 0"), want);
    }

    #[test]
    fn groups_of_an_unconnected_socket_are_an_error() {
        let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)
            .expect("socket");
        assert!(peer_groups(sock.as_fd()).is_err());
    }
}
