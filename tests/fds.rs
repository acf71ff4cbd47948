//! Descriptor passing (`--max-fds`) against the real binary: every socket
//! type and framing echoes the descriptors with the bytes they came with
//! (the same open files, in order); more than N closes that connection
//! only; descriptors queued behind backpressure are closed when their
//! connection dies; the server's descriptor count is back to its baseline
//! after thousands of fd-passing connections; running out of descriptors
//! while receiving closes the connection and is counted.

mod common;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{bin, connect, open_fds, Proc, TempDir, PATIENCE};
use uds_reactor::fds::{recv_with_fds, send_with_fds};

/// Device and inode: which open file a descriptor refers to.
fn file_id(fd: BorrowedFd<'_>) -> (u64, u64) {
    let f = File::from(fd.try_clone_to_owned().expect("dup"));
    let m = f.metadata().expect("fstat");
    (m.dev(), m.ino())
}

/// Three kinds of open file to pass: a pipe's write end, a regular file,
/// a socket. Returns them with what lets the test see through them.
struct Passed {
    pipe_r: File,
    pipe_w: OwnedFd,
    file: OwnedFd,
    sock: OwnedFd,
    sock_peer: UnixStream,
}

impl Passed {
    fn new(dir: &TempDir) -> Passed {
        let (pipe_r, pipe_w) = pipe();
        let path = dir.path("passed.txt");
        std::fs::write(&path, b"file contents").unwrap();
        let file = OwnedFd::from(File::open(&path).unwrap());
        let (sock, sock_peer) = UnixStream::pair().unwrap();
        Passed {
            pipe_r,
            pipe_w,
            file,
            sock: OwnedFd::from(sock),
            sock_peer,
        }
    }

    fn all(&self) -> [BorrowedFd<'_>; 3] {
        [self.pipe_w.as_fd(), self.file.as_fd(), self.sock.as_fd()]
    }

    /// The returned descriptors are the same open files, in order, and
    /// work: written through, read from.
    fn check_returned(&mut self, got: Vec<OwnedFd>) {
        let want: Vec<_> = self.all().iter().map(|f| file_id(*f)).collect();
        let seen: Vec<_> = got.iter().map(|f| file_id(f.as_fd())).collect();
        assert_eq!(seen, want, "the same open files, in order");
        let mut it = got.into_iter();
        let mut w = File::from(it.next().unwrap());
        w.write_all(b"through the pipe").unwrap();
        let mut buf = [0; 16];
        self.pipe_r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"through the pipe");
        // The same open file: its offset is shared, so start over.
        let mut f = File::from(it.next().unwrap());
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "file contents");
        let mut sock = UnixStream::from(it.next().unwrap());
        sock.write_all(b"hi").unwrap();
        let mut two = [0; 2];
        self.sock_peer.read_exact(&mut two).unwrap();
        assert_eq!(&two, b"hi");
    }
}

fn pipe() -> (File, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (File::from(OwnedFd::from(r)), OwnedFd::from(w))
}

/// Receives from a stream until `want` bytes came, with the descriptors.
fn recv_stream(s: &UnixStream, want: usize) -> (Vec<u8>, Vec<OwnedFd>) {
    let (mut got, mut fds, mut buf) = (Vec::new(), Vec::new(), [0; 4096]);
    while got.len() < want {
        let r = recv_with_fds(s, &mut buf, 16, &mut fds).expect("recv");
        assert!(r.len > 0, "EOF after {} of {want} bytes", got.len());
        got.extend_from_slice(&buf[..r.len]);
    }
    (got, fds)
}

fn serve(path: &Path, extra: &[&str]) -> Proc {
    let mut args = vec!["--max-fds", "4"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    Proc::serve(&args)
}

#[test]
fn every_stream_framing_returns_the_same_files_with_the_echo() {
    let dir = TempDir::new("fds-stream");
    for (framing, one, many) in [
        ("raw", &b"one"[..], &b"three"[..]),
        ("line", b"one\n", b"three\n"),
        ("length", b"\0\0\0\x03one", b"\0\0\0\x05three"),
    ] {
        let path = dir.path(&format!("{framing}.sock"));
        let mut server = serve(&path, &["--framing", framing]);
        let mut passed = Passed::new(&dir);
        let s = connect(&path);
        // One descriptor, then three, each after the previous echo.
        send_with_fds(&s, one, &[passed.pipe_w.as_fd()]).unwrap();
        let (echo, fds) = recv_stream(&s, one.len());
        assert_eq!((echo.as_slice(), fds.len()), (one, 1), "{framing}");
        assert_eq!(file_id(fds[0].as_fd()), file_id(passed.pipe_w.as_fd()));
        send_with_fds(&s, many, &passed.all()).unwrap();
        let (echo, fds) = recv_stream(&s, many.len());
        assert_eq!(echo, many, "{framing}");
        passed.check_returned(fds);
        // Bytes without descriptors come back without any.
        send_with_fds(&s, one, &[] as &[BorrowedFd<'_>]).unwrap();
        let (echo, fds) = recv_stream(&s, one.len());
        assert_eq!((echo.as_slice(), fds.len()), (one, 0), "{framing}");
        drop(s);
        let stats = server.stats();
        assert_eq!(common::stat(&stats, "fds_in"), 4, "{stats}");
        assert_eq!(common::stat(&stats, "fds_out"), 4, "{stats}");
        assert!(server.stop().success());
    }
}

/// On a stream the descriptors go with the frame holding the first byte
/// of the read they came with: a frame split over two sends gets both
/// sets, and the frame after it none.
#[test]
fn a_frame_gets_the_descriptors_of_every_read_that_began_in_it() {
    let dir = TempDir::new("fds-attach");
    let path = dir.path("s.sock");
    let mut server = serve(&path, &["--framing", "line"]);
    let passed = Passed::new(&dir);
    let s = connect(&path);
    send_with_fds(&s, b"first ha", &[passed.pipe_w.as_fd()]).unwrap();
    // The server has read the partial line before the rest arrives: the
    // rest comes in a read of its own (its first byte is in this frame).
    let deadline = Instant::now() + PATIENCE;
    while common::stat(&server.stats(), "bytes_in") < 8 {
        assert!(Instant::now() < deadline);
    }
    send_with_fds(&s, b"lf\n", &[passed.file.as_fd(), passed.sock.as_fd()]).unwrap();
    let (echo, fds) = recv_stream(&s, 11);
    assert_eq!(echo, b"first half\n");
    let seen: Vec<_> = fds.iter().map(|f| file_id(f.as_fd())).collect();
    let want: Vec<_> = passed.all().iter().map(|f| file_id(*f)).collect();
    assert_eq!(seen, want, "both reads' descriptors, in order, on one echo");
    assert!(server.stop().success());
}

#[test]
fn seqpacket_and_dgram_return_descriptors_with_their_message() {
    let dir = TempDir::new("fds-msg");
    // seqpacket
    let path = dir.path("sp.sock");
    let mut server = serve(&path, &["--type", "seqpacket"]);
    let mut passed = Passed::new(&dir);
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    sock.connect(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..3 {
        send_with_fds(&sock, b"msg", &passed.all()).unwrap();
        let (mut buf, mut fds) = ([0; 64], Vec::new());
        let r = recv_with_fds(&sock, &mut buf, 8, &mut fds).unwrap();
        assert_eq!(&buf[..r.len], b"msg");
        passed.check_returned(fds);
    }
    drop(sock);
    assert!(server.stop().success());
    // dgram
    let path = dir.path("dg.sock");
    let mut server = serve(&path, &["--type", "dgram"]);
    let client = UnixDatagram::bind(dir.path("client.sock")).unwrap();
    client.connect(&path).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    for _ in 0..3 {
        send_with_fds(&client, b"dgram", &passed.all()).unwrap();
        let (mut buf, mut fds) = ([0; 64], Vec::new());
        let r = recv_with_fds(&client, &mut buf, 8, &mut fds).unwrap();
        assert_eq!(&buf[..r.len], b"dgram");
        passed.check_returned(fds);
    }
    // More than --max-fds: that datagram is dropped and counted; the next
    // is served.
    let many: Vec<_> = (0..6).map(|_| passed.pipe_w.as_fd()).collect();
    send_with_fds(&client, b"too many", &many).unwrap();
    send_with_fds(&client, b"after", &[passed.pipe_w.as_fd()]).unwrap();
    let (mut buf, mut fds) = ([0; 64], Vec::new());
    let r = recv_with_fds(&client, &mut buf, 8, &mut fds).unwrap();
    assert_eq!((&buf[..r.len], fds.len()), (&b"after"[..], 1));
    server.wait_for("dropped a datagram");
    assert_eq!(server.counter("fd_errors"), 1);
    assert!(server.stop().success());
}

/// N+1 descriptors close that connection as a protocol violation (the
/// ones that arrived are closed); another connection goes on.
#[test]
fn more_than_max_fds_closes_that_connection_only() {
    let dir = TempDir::new("fds-over");
    let path = dir.path("s.sock");
    let mut server = serve(&path, &["--framing", "line"]);
    let baseline = open_fds(server.pid());
    let passed = Passed::new(&dir);
    let good = connect(&path);
    let bad = connect(&path);
    let five: Vec<_> = (0..5).map(|_| passed.pipe_w.as_fd()).collect();
    send_with_fds(&bad, b"five\n", &five).unwrap();
    let mut rest = Vec::new();
    (&bad).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed without an echo: {rest:?}");
    server.wait_for("more descriptors than --max-fds 4");
    send_with_fds(&good, b"still here\n", &[passed.file.as_fd()]).unwrap();
    let (echo, fds) = recv_stream(&good, 11);
    assert_eq!((echo.as_slice(), fds.len()), (&b"still here\n"[..], 1));
    drop((good, bad, fds));
    server.fds_back_to(baseline);
    assert_eq!(server.counter("fd_errors"), 1);
    assert!(server.stop().success());
}

/// A peer that sends descriptors and never reads: the server holds a
/// bounded number (it stops reading), and closes every one when the peer
/// goes away.
#[test]
fn descriptors_behind_backpressure_are_bounded_and_closed_with_the_connection() {
    let dir = TempDir::new("fds-backpressure");
    let path = dir.path("s.sock");
    let mut server = serve(&path, &["--framing", "line", "--max-buffer", "4K"]);
    let pid = server.pid();
    let baseline = open_fds(pid);
    let passed = Passed::new(&dir);
    let s = connect(&path);
    s.set_nonblocking(true).unwrap();
    // Lines of 1 KiB, each with one descriptor, until the socket refuses
    // (the server stopped reading) or a bound is reached.
    let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
    let mut sent = 0;
    while sent < 5000 {
        match send_with_fds(&s, &line, &[passed.pipe_w.as_fd()]) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent < 5000, "the server kept reading");
    // Held: at most 2 * 4 - 1 by the server (the rest wait in the kernel).
    let held = open_fds(pid) - baseline;
    assert!(
        held <= 1 + 7,
        "{held} descriptors held (1 is the connection)"
    );
    // Paused, it does not spin: such a stream is polled level-triggered,
    // and reading is off while it is paused (a busy loop would burn ~50
    // ticks in the half second; the sleep is the measuring window).
    let before = common::cpu_ticks(pid);
    std::thread::sleep(Duration::from_millis(500));
    let ticks = common::cpu_ticks(pid) - before;
    assert!(ticks <= 10, "{ticks} ticks of CPU while paused");
    drop(s);
    server.fds_back_to(baseline);
    assert!(server.stop().success());
}

/// Thousands of connections passing descriptors, read or abandoned: the
/// server ends with exactly the descriptors it started with.
#[test]
fn thousands_of_fd_connections_leave_no_descriptor_behind() {
    let dir = TempDir::new("fds-churn");
    let path = dir.path("s.sock");
    let mut server = serve(&path, &["--framing", "line"]);
    let pid = server.pid();
    let baseline = open_fds(pid);
    let passed = Passed::new(&dir);
    for i in 0..2000 {
        let s = connect(&path);
        let n = 1 + i % 4;
        let fds: Vec<_> = passed.all().into_iter().cycle().take(n).collect();
        send_with_fds(&s, b"a\nb\n", &fds).unwrap();
        if i % 2 == 0 {
            let (_, got) = recv_stream(&s, 4);
            assert_eq!(got.len(), n);
        } // else: closed with the echo (and its descriptors) unread
    }
    server.fds_back_to(baseline);
    let stats = server.stats();
    assert_eq!(common::stat(&stats, "fds_in"), 5000, "{stats}");
    assert!(server.stop().success());
}

/// Out of descriptors while receiving: the kernel drops them
/// (`MSG_CTRUNC`), so the connection is closed and counted, never served
/// as if nothing happened; the server goes on.
#[test]
fn out_of_descriptors_while_receiving_closes_the_connection() {
    let dir = TempDir::new("fds-emfile");
    let path = dir.path("s.sock");
    let sp = path.to_str().unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args([
        "--nofile=16:16",
        "--",
        bin(),
        "--max-fds",
        "8",
        "--max-connections",
        "4",
        sp,
    ]);
    let mut server = Proc::spawn_cmd(&mut cmd);
    server.wait_for("listening on");
    let free = 16 - open_fds(server.pid());
    let passed = Passed::new(&dir);
    let s = connect(&path);
    // One connection takes one descriptor; then eight more cannot fit.
    assert!(
        free < 1 + 8,
        "{free} descriptors free: the test needs fewer"
    );
    let eight: Vec<_> = (0..8).map(|_| passed.pipe_w.as_fd()).collect();
    send_with_fds(&s, b"too many for the table", &eight).unwrap();
    let mut rest = Vec::new();
    (&s).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "closed without an echo");
    server.wait_for("or the server is out of descriptors");
    assert_eq!(server.counter("fd_errors"), 1);
    // Served again once the descriptors are back.
    let t = connect(&path);
    send_with_fds(&t, b"ok", &[passed.file.as_fd()]).unwrap();
    let (echo, fds) = recv_stream(&t, 2);
    assert_eq!((echo.as_slice(), fds.len()), (&b"ok"[..], 1));
    assert!(server.stop().success());
}

/// Without `--max-fds` the server takes no descriptor: the kernel closes
/// what a peer sends, and the bytes are echoed as usual.
#[test]
fn without_max_fds_descriptors_are_refused_and_bytes_echoed() {
    let dir = TempDir::new("fds-off");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);
    let baseline = open_fds(server.pid());
    let passed = Passed::new(&dir);
    let s = connect(&path);
    send_with_fds(&s, b"bytes", &passed.all()).unwrap();
    let (echo, fds) = recv_stream(&s, 5);
    assert_eq!((echo.as_slice(), fds.len()), (&b"bytes"[..], 0));
    assert_eq!(open_fds(server.pid()), baseline + 1, "only the connection");
    drop(s);
    assert!(server.stop().success());
}
