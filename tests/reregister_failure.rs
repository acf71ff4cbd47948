//! A connection whose poll registration cannot be changed is closed, not
//! left in the slab: the server must reap it (descriptor and slot given
//! back) instead of keeping a dead entry that, with edge-triggered polling,
//! no event will ever visit again.
//!
//! The failure is forced in-process: the test finds the server's accepted
//! socket in this process's descriptor table and, with `dup2`, puts
//! another socket under its number. epoll's registration stays with the
//! original socket, so when the server next changes its interest for that
//! number (`EPOLL_CTL_MOD`), the kernel answers `ENOENT`.
//!
//! Alone in its file: it diffs `/proc/self/fd`, so no other test may open
//! descriptors meanwhile.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use socket2::SockRef;
use uds_reactor::{Config, Server, Stats};

/// How long any wait may take. A server that reaps the connection does so
/// in the turn the reregister fails, within milliseconds.
const PATIENCE: Duration = Duration::from_secs(5);

/// This process's open socket descriptors.
fn socket_fds() -> BTreeSet<RawFd> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|fd| {
            std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .collect()
}

/// Polls `stats` until `done` holds; returns the last value seen.
fn wait_stats(handle: &uds_reactor::Handle, done: impl Fn(&Stats) -> bool) -> (bool, Stats) {
    let deadline = Instant::now() + PATIENCE;
    for _ in 0..1_000_000 {
        let s = handle.stats();
        if done(&s) {
            return (true, s);
        }
        if Instant::now() > deadline {
            return (false, s);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (false, handle.stats())
}

#[test]
fn a_failed_reregister_closes_the_connection() {
    let dir = std::env::temp_dir().join(format!("udsr-rereg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");

    let server = Server::bind(Config::new(&path)).expect("bind");
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());

    let before = socket_fds();
    let mut client = UnixStream::connect(&path).expect("connect");
    let (accepted, _) = wait_stats(&handle, |s| s.accepted == 1);
    assert!(accepted, "the server never accepted the connection");
    let mut new: Vec<RawFd> = socket_fds().difference(&before).copied().collect();
    new.retain(|&fd| fd != client.as_raw_fd());
    assert_eq!(
        new.len(),
        1,
        "the server's socket among new descriptors {new:?}"
    );
    let conn_fd = new[0];

    // Keep the original accepted socket alive (and with it epoll's
    // registration) under another number.
    // SAFETY: `conn_fd` is open (just listed); dup only creates a new
    // descriptor, which we own from here.
    let original = unsafe { libc::dup(conn_fd) };
    assert!(original >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `original` was just returned by dup; nothing else owns it.
    let original = unsafe { OwnedFd::from_raw_fd(original) };

    // `a` goes under the server's number. Its send buffer is made tiny so
    // the server's echo into it blocks at once and the server needs
    // WRITABLE; `b` (the other end) is never read.
    // Nonblocking, as the server's own sockets are: a blocking write would
    // stall its loop instead of asking for WRITABLE.
    let (a, mut b) = UnixStream::pair().expect("socketpair");
    a.set_nonblocking(true).unwrap();
    SockRef::from(&a).set_send_buffer_size(4096).unwrap();
    // SAFETY: both descriptors are open; dup2 atomically closes the
    // server's descriptor number and makes it refer to `a`'s socket. The
    // server keeps using the number as its own; the socket it named lives
    // on as `original`, so nothing the server holds is freed under it.
    let rc = unsafe { libc::dup2(a.as_raw_fd(), conn_fd) };
    assert_eq!(rc, conn_fd, "dup2: {}", std::io::Error::last_os_error());

    // 100 KiB waiting for the server on `a` (less than one turn's reads,
    // so the server drains it and waits for the next edge).
    b.set_nonblocking(true).unwrap();
    let chunk = vec![7u8; 100 << 10];
    let mut queued = 0;
    while queued < chunk.len() {
        match b.write(&chunk[queued..]) {
            Ok(n) => queued += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write into the pair: {e}"),
        }
    }
    assert!(
        queued > 16 << 10,
        "only {queued} bytes queued for the server"
    );

    // One byte on the original connection: an event for the server's
    // token, so it reads its descriptor number (now `a`), echoes into it,
    // finds output blocked and asks for WRITABLE, which fails.
    client.write_all(b"x").unwrap();

    let (closed, stats) = wait_stats(&handle, |s| s.open == 0 && s.closed == 1);
    assert!(
        closed,
        "the connection whose reregister failed was never closed: {stats:?}"
    );

    drop((a, b, original));
    handle.stop();
    thread.join().expect("server thread").expect("run");
    let _ = std::fs::remove_dir_all(&dir);
}
