//! The rate-limited warnings count their own kind only: the number in an
//! `accept: ...; pausing accepts (N ...)` line counts accept errors, and
//! the one in a `connection limit M reached: ... (N ...)` line counts
//! rejections, never the sum of both.
//!
//! Against the real binary with `--max-connections 1`: first rejections
//! (one connection held, more arriving), then accept errors (the server's
//! open-file soft limit lowered from here, with `prlimit(2)`, to the number
//! of descriptors it holds, so the next `accept` fails with `EMFILE`).
//! Each kind's reported numbers must add up to no more than the server's
//! own counter of that kind (`rejected=`, `accept_errors=` in the final
//! stats line): a line may leave some events unreported (rate limiting),
//! never report the other kind's.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use common::{stat, Proc, TempDir, PATIENCE};

const REJECTIONS: usize = 10;

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Reads until the server closes the connection.
fn expect_closed(s: &mut UnixStream) {
    let mut buf = [0; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close the connection, got {other:?}"),
    }
}

/// The count a rate-limited line reports: the first integer inside its
/// last parentheses (`accept: Too many open files (os error 24); pausing
/// accepts (12 ...)` reports 12, not the errno).
fn count_in_parens(line: &str) -> u64 {
    let inside = line
        .rsplit_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside)
        .unwrap_or_else(|| panic!("no parentheses in {line:?}"));
    let digits: String = inside
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count in {line:?}"))
}

/// The lowest descriptor number `pid` does not have open: the one its next
/// `accept` would get.
fn lowest_free_fd(pid: i32) -> libc::rlim_t {
    let open: BTreeSet<libc::rlim_t> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the server's /proc/PID/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !open.contains(n)).unwrap()
}

/// Sets the soft open-file limit of `pid` (our child) to `soft`, keeping
/// its hard limit; returns the old soft limit.
fn set_soft_nofile(pid: i32, soft: libc::rlim_t) -> libc::rlim_t {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a null new limit only reads; `old` is a valid, writable
    // rlimit for the call's duration.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid rlimit, only read by the call; a null old
    // limit is allowed.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

#[test]
fn accept_errors_and_rejections_are_counted_apart() {
    let dir = TempDir::new("ratelimit");
    let path = dir.path("s.sock");
    let mut p = Proc::serve(&[path.to_str().unwrap(), "--max-connections", "1"]);

    // One connection held, proven accepted by its echo.
    let mut held = connect(&path);
    held.write_all(b"held").unwrap();
    let mut got = [0; 4];
    held.read_exact(&mut got)
        .expect("echo on the held connection");

    // Rejections: each further connection is accepted and closed at once.
    for _ in 0..REJECTIONS {
        expect_closed(&mut connect(&path));
    }
    assert_eq!(p.counter("rejected"), REJECTIONS as u64);

    // Accept errors: no descriptor left for the next connection.
    let old = set_soft_nofile(p.pid(), lowest_free_fd(p.pid()));
    let waiting = connect(&path);
    let line = p.wait_for("accept:");
    println!("{line}");
    set_soft_nofile(p.pid(), old);

    drop(waiting);
    drop(held);
    p.signal(15);
    let last = p.wait_for("stats open=");
    assert!(p.wait_exit().success(), "{}", p.log_text());
    let accept_errors = stat(&last, "accept_errors");
    let rejected = stat(&last, "rejected");
    assert!(accept_errors >= 1, "{last}");

    let log = p.log_text();
    let mut reported_errors = 0;
    let mut reported_rejections = 0;
    for l in log.lines() {
        if l.contains("accept:") {
            reported_errors += count_in_parens(l);
        } else if l.contains("connection limit") {
            reported_rejections += count_in_parens(l);
        }
    }
    assert!(
        reported_errors <= accept_errors,
        "the accept-error warnings report {reported_errors} events, but there were \
         {accept_errors} accept errors (and {rejected} rejections): they count rejections too\n{log}"
    );
    assert!(
        reported_rejections <= rejected,
        "the connection-limit warnings report {reported_rejections} events, but there \
         were {rejected} rejections (and {accept_errors} accept errors)\n{log}"
    );
}
