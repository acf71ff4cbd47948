//! `--type dgram` against the real binary: every datagram goes back to its
//! sender with its boundaries (empty ones included); unanswerable,
//! over-long and refused datagrams are dropped and counted, never echoed
//! truncated; a blocking sender bursting past every buffer loses nothing
//! because the server stops reading while its replies wait. Also the
//! library with a custom handler answering through `Context::reply_to`,
//! and the usage errors of datagram sockets.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{stat, tagged, Library, Proc, TempDir, PATIENCE};
use uds_reactor::{Config, Context, Frame, Handler, SocketType};

/// Starts the binary on a fresh path with `--type dgram` and `args`.
fn serve(args: &[&str]) -> (TempDir, Proc, PathBuf) {
    let dir = TempDir::new("dgram");
    let path = dir.path("s.sock");
    let mut all = vec![path.to_str().unwrap(), "--type", "dgram"];
    all.extend_from_slice(args);
    let p = Proc::serve(&all);
    (dir, p, path)
}

/// A client bound at `path` (so it can be answered), with timeouts.
fn bound(path: &Path) -> UnixDatagram {
    let c = UnixDatagram::bind(path).expect("bind client");
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.set_write_timeout(Some(PATIENCE)).unwrap();
    c
}

/// Receives one datagram into a buffer larger than any the test expects,
/// so a merged or oversized reply would show; checks it came from `server`.
fn recv(c: &UnixDatagram, server: &Path) -> Vec<u8> {
    let mut buf = vec![0; 1 << 21];
    let (n, from) = c.recv_from(&mut buf).expect("recv reply");
    assert!(n < buf.len(), "reply longer than any datagram sent");
    assert_eq!(from.as_pathname(), Some(server), "reply from the server");
    buf.truncate(n);
    buf
}

#[test]
fn every_datagram_comes_back_to_its_sender_whole() {
    const MAX: usize = 2048;
    let (dir, mut p, server) = serve(&["--max-frame", "2K"]);
    let c = bound(&dir.path("c.sock"));
    // Every size from empty to --max-frame, a few at a time (fewer than
    // the receive queue holds, so no reply has to wait).
    let sizes: Vec<usize> = (0..=MAX).collect();
    for window in sizes.chunks(8) {
        for &len in window {
            c.send_to(&tagged(len, len), &server).expect("send");
        }
        for &len in window {
            let got = recv(&c, &server);
            assert_eq!(got.len(), len, "reply to the {len}-byte datagram");
            assert!(got == tagged(len, len), "content of the {len}-byte reply");
        }
    }
    let line = p.stats();
    assert_eq!(stat(&line, "frames_in"), sizes.len() as u64);
    assert_eq!(stat(&line, "frames_out"), sizes.len() as u64);
    assert_eq!(stat(&line, "dropped"), 0);
    let total: usize = sizes.iter().sum();
    assert_eq!(stat(&line, "bytes_out"), total as u64);
    assert!(p.stop().success());
    assert!(!common::exists(&server), "socket file removed at shutdown");
}

#[test]
fn datagram_of_max_frame_comes_back_at_the_default_limit() {
    // As for seqpacket: the default --max-frame (1 MiB) is past the default
    // send buffer; the server raises its own so the reply can be sent.
    const MAX: usize = 1 << 20;
    let (dir, mut p, server) = serve(&[]);
    let c = bound(&dir.path("c.sock"));
    let sock = socket2::SockRef::from(&c);
    sock.set_send_buffer_size(MAX + 32).unwrap();
    let len = MAX.min(sock.send_buffer_size().unwrap() - 32);
    assert!(
        len > 300 << 10,
        "the client could not raise its send buffer"
    );
    let d = tagged(3, len);
    c.send_to(&d, &server).expect("send");
    let got = recv(&c, &server);
    assert_eq!(got.len(), len);
    assert!(got == d);
    assert!(p.stop().success());
}

#[test]
fn unbound_sender_gets_nothing_and_is_counted() {
    // The drop is logged at debug: an unbound sender is the client's
    // mistake, not the operator's.
    let (dir, mut p, server) = serve(&["-v"]);
    let unbound = UnixDatagram::unbound().unwrap();
    for i in 0..3 {
        unbound.send_to(&tagged(i, 10), &server).expect("send");
    }
    p.wait_for("unbound sender");
    // A bound client is served as usual, after the three were handled.
    let c = bound(&dir.path("c.sock"));
    c.send_to(b"bound", &server).unwrap();
    assert_eq!(recv(&c, &server), b"bound");
    unbound.set_nonblocking(true).unwrap();
    let mut buf = [0; 64];
    let err = unbound.recv(&mut buf).expect_err("nothing for the unbound");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    let line = p.stats();
    assert_eq!(stat(&line, "dropped"), 3);
    assert_eq!(stat(&line, "frames_in"), 1);
    assert!(p.stop().success());
}

#[test]
fn over_long_datagram_is_dropped_never_truncated() {
    let (dir, mut p, server) = serve(&["--max-frame", "100"]);
    let c = bound(&dir.path("c.sock"));
    c.send_to(&tagged(1, 101), &server).unwrap();
    c.send_to(&tagged(2, 5000), &server).unwrap();
    c.send_to(&tagged(3, 100), &server).unwrap();
    // The first reply is the 100-byte datagram: the longer ones were not
    // echoed, not even cut to 100 bytes.
    assert_eq!(recv(&c, &server), tagged(3, 100));
    let warn = p.wait_for("longer than --max-frame 100");
    assert!(warn.contains("WARN") && warn.contains("uid="), "{warn}");
    let line = p.stats();
    assert_eq!(stat(&line, "dropped"), 2);
    assert_eq!(stat(&line, "frames_in"), 1);
    assert!(p.stop().success());
}

#[test]
fn a_sender_that_vanished_does_not_disturb_the_server() {
    let (dir, mut p, server) = serve(&[]);
    for i in 0..20 {
        let gone = UnixDatagram::bind(dir.path(&format!("gone-{i}.sock"))).unwrap();
        gone.send_to(b"and away", &server).unwrap();
    }
    let c = bound(&dir.path("c.sock"));
    c.send_to(b"still served", &server).unwrap();
    assert_eq!(recv(&c, &server), b"still served");
    assert!(p.stop().success());
}

/// Sends datagram `i` = `tagged(i, len)` for `i` in `0..n` to `to`, from
/// the nonblocking `c`, until the kernel refuses them (`WouldBlock`: the
/// server's receive queue is full) and the server has stopped reading.
/// That is read from two stats lines, A and B, with a send between them
/// that the kernel refuses: the datagrams filling the queue then were all
/// there at A (nothing was sent since), and each line costs the server a
/// loop turn, so a server that may still read reads between A and B; an
/// unchanged `frames_in` means it has stopped. Otherwise room is coming and
/// sending goes on. Returns how many were sent (`n` if all were); `c` is
/// blocking again on return.
fn send_until_stalled(c: &UnixDatagram, to: &Path, n: usize, len: usize, p: &mut Proc) -> usize {
    let deadline = Instant::now() + PATIENCE;
    c.set_nonblocking(true).unwrap();
    let mut next = 0;
    // Sends datagram `next` if the kernel takes it.
    let send = |next: &mut usize| -> bool {
        match c.send_to(&tagged(*next, len), to) {
            Ok(_) => {
                *next += 1;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("send: {e}"),
        }
    };
    for _ in 0..100_000 {
        while next < n && send(&mut next) {}
        if next == n {
            break;
        }
        let a = stat(&p.stats(), "frames_in");
        if !send(&mut next) && stat(&p.stats(), "frames_in") == a {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server neither stopped reading nor took all {n} datagrams"
        );
    }
    c.set_nonblocking(false).unwrap();
    next
}

#[test]
fn a_burst_from_a_blocking_sender_loses_nothing() {
    // 20,000 datagrams of 1 KiB (20 MiB) from a socket that reads nothing
    // until its sends stall (nonblocking until the kernel refuses one and
    // the server has stopped reading, then blocking for the rest, while
    // the replies are read): far more than the kernel queues and
    // --max-buffer hold. A server that dropped replies when the client's
    // queue is full would never stall the sender and would lose replies; a
    // correct one stops reading while its reply queue is full, so the
    // sender blocks, and once the client reads, every reply arrives, in
    // order, intact.
    const N: usize = 20_000;
    const LEN: usize = 1024;
    let (dir, mut p, server) = serve(&[]);
    let c = bound(&dir.path("c.sock"));
    let stalled_at = send_until_stalled(&c, &server, N, LEN, &mut p);
    assert!(
        stalled_at < N / 10,
        "the sender was never held back ({stalled_at} of {N} sent): the server kept reading"
    );
    let line = p.stats();
    assert!(stat(&line, "frames_in") <= stalled_at as u64);
    // Held back, it does not spin: it reads nothing while the reply queue
    // is full, and only the retries of the queued replies wake it (a busy
    // loop burns ~50 ticks in the half second; the sleep is the measuring
    // window).
    let before = common::cpu_ticks(p.pid());
    thread::sleep(Duration::from_millis(500));
    let ticks = common::cpu_ticks(p.pid()) - before;
    assert!(ticks <= 10, "{ticks} ticks of CPU while held back");
    // The rest, blocking, while the replies are read.
    let tx = c.try_clone().unwrap();
    let to = server.clone();
    let sender = thread::spawn(move || {
        for i in stalled_at..N {
            tx.send_to(&tagged(i, LEN), &to).expect("blocking send");
        }
    });
    let mut buf = vec![0; 2 * LEN];
    for i in 0..N {
        let (n, _) = c
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i} of {N}: {e}"));
        assert_eq!(n, LEN, "reply {i}: length");
        assert!(buf[..n] == tagged(i, LEN), "reply {i}: content or order");
    }
    sender.join().unwrap();
    let line = p.stats();
    assert_eq!(stat(&line, "frames_out"), N as u64);
    assert_eq!(stat(&line, "dropped"), 0);
    assert!(p.stop().success());
}

#[test]
fn credentials_decide_who_is_served() {
    let uid = common::our_ids().0.to_string();
    let (dir, mut p, server) = serve(&["--allow-uid", &uid]);
    let c = bound(&dir.path("c.sock"));
    c.send_to(b"me", &server).unwrap();
    assert_eq!(recv(&c, &server), b"me");
    assert!(p.stop().success());

    let other = (common::our_ids().0 + 4242).to_string();
    let (dir, mut p, server) = serve(&["--allow-uid", &other]);
    let c = bound(&dir.path("c.sock"));
    c.send_to(b"not me", &server).unwrap();
    let warn = p.wait_for("rejected a datagram");
    assert!(warn.contains(&format!("uid={uid}")), "{warn}");
    let line = p.stats();
    assert_eq!(stat(&line, "rejected_cred"), 1);
    assert_eq!(stat(&line, "dropped"), 1);
    assert_eq!(stat(&line, "frames_in"), 0);
    c.set_nonblocking(true).unwrap();
    let err = c
        .recv(&mut [0; 16])
        .expect_err("no reply for a refused peer");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
    assert!(p.stop().success());
}

/// Answers each datagram with where the answer goes and who asked.
struct Addressed;

impl Handler for Addressed {
    type State = u64;

    fn open(&mut self, _: &mut Context<'_>) -> u64 {
        u64::default()
    }

    fn frame(&mut self, count: &mut u64, frame: Frame<'_>, cx: &mut Context<'_>) {
        *count += 1;
        let to = cx
            .reply_to()
            .and_then(|a| a.as_pathname().map(Path::to_path_buf));
        let uid = cx.peer().map(|p| p.uid);
        let reply = format!(
            "{} #{count} to {} uid {uid:?}",
            String::from_utf8_lossy(frame.payload()),
            to.map(|p| p.display().to_string()).unwrap_or_default()
        );
        cx.send(reply.as_bytes()).expect("a short reply fits");
    }
}

#[test]
fn library_handler_replies_to_each_sender() {
    let dir = TempDir::new("dgram-lib");
    let path = dir.path("lib.sock");
    let mut config = Config::new(&path);
    config.socket_type = SocketType::Dgram;
    let server = Library::start(config, Addressed);

    let (a_path, b_path) = (dir.path("a.sock"), dir.path("b.sock"));
    let (a, b) = (bound(&a_path), bound(&b_path));
    let uid = Some(common::our_ids().0);
    a.send_to(b"hi", &path).unwrap();
    b.send_to(b"yo", &path).unwrap();
    a.send_to(b"again", &path).unwrap();
    let reply = |c: &UnixDatagram| String::from_utf8(recv(c, &path)).unwrap();
    assert_eq!(
        reply(&a),
        format!("hi #1 to {} uid {uid:?}", a_path.display())
    );
    assert_eq!(
        reply(&b),
        format!("yo #2 to {} uid {uid:?}", b_path.display())
    );
    assert_eq!(
        reply(&a),
        format!("again #3 to {} uid {uid:?}", a_path.display())
    );

    let stats = server.stop();
    assert_eq!((stats.frames_in, stats.frames_out), (3, 3));
    assert!(!path.exists());
}

#[test]
fn connection_options_with_dgram_are_usage_errors() {
    let dir = TempDir::new("dgram-usage");
    let path = dir.path("u.sock");
    let path = path.to_str().unwrap();
    for (flag, value) in [
        ("--backlog", "16"),
        ("--max-connections", "10"),
        ("--idle-timeout", "5"),
    ] {
        let out = Command::new(common::bin())
            .args([path, "--type", "dgram", flag, value])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error:") && first.contains(flag) && first.contains("dgram"),
            "{flag}: {err}"
        );
        assert!(!common::exists(Path::new(path)), "nothing bound");
    }
    // The same options are fine for connection-oriented types.
    let mut p = Proc::serve(&[path, "--type", "seqpacket", "--backlog", "16"]);
    assert!(p.stop().success());
}
