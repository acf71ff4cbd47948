//! `--type seqpacket` against the real binary: each message comes back as
//! exactly one message with its boundaries, an over-long message closes
//! the connection (never truncated), a non-reading peer is backpressured
//! without loss, half-close and zero-length messages end the connection
//! after everything owed is written. Also the library with a custom
//! handler, and the usage errors of message sockets.

mod common;

use std::io::{self, Read};
use std::mem::MaybeUninit;
use std::net::Shutdown;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{stat, tagged, Library, Proc, Rng, TempDir, PATIENCE};
use socket2::{Domain, SockAddr, Socket, Type};
use uds_reactor::{Config, Context, Frame, Handler, SocketType};

/// A blocking seqpacket client with timeouts, so a lost message fails the
/// test instead of hanging it.
fn connect(path: &Path) -> Socket {
    let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None).expect("socket");
    s.connect(&SockAddr::unix(path).unwrap()).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    s
}

/// Sends one message; a seqpacket send is all or nothing.
fn send(s: &Socket, msg: &[u8]) {
    let n = s.send(msg).expect("send");
    assert_eq!(n, msg.len(), "seqpacket send is whole");
}

/// Receives one whole message, checking its exact length first: a peek
/// with `MSG_TRUNC` returns the message's real length whatever the buffer,
/// then the message is read into a buffer one byte larger, so any
/// truncation or merging would show. `None` is EOF (a zero-length read).
fn recv(s: &Socket) -> Option<Vec<u8>> {
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    let real = s
        .recv_with_flags(&mut probe, libc::MSG_PEEK | libc::MSG_TRUNC)
        .expect("peek message length");
    let mut buf = vec![0; real + 1];
    let n = (&*s).read(&mut buf).expect("recv");
    assert_eq!(n, real, "the message read is the message peeked");
    if n == 0 {
        return None;
    }
    buf.truncate(n);
    Some(buf)
}

/// Starts the binary on a fresh path with `--type seqpacket` and `args`.
fn serve(args: &[&str]) -> (TempDir, Proc, std::path::PathBuf) {
    let dir = TempDir::new("seqpacket");
    let path = dir.path("s.sock");
    let mut all = vec![path.to_str().unwrap(), "--type", "seqpacket"];
    all.extend_from_slice(args);
    let p = Proc::serve(&all);
    (dir, p, path)
}

#[test]
fn every_message_comes_back_whole_with_its_boundaries() {
    const MAX: usize = 64 << 10;
    let (_dir, mut p, path) = serve(&["--max-frame", "64K"]);
    let mut rng = Rng(0x5eed);
    // Edge sizes first, then random ones, biased small and large.
    let mut sizes = vec![1, 2, 3, 4, 5, 255, 4096, MAX - 1, MAX, MAX];
    for _ in 0..300 {
        sizes.push(match rng.range(0, 2) {
            0 => rng.range(1, 64),
            1 => rng.range(1, 8 << 10),
            _ => rng.range(1, MAX),
        });
    }
    let s = connect(&path);
    let w = s.try_clone().unwrap();
    let to_send = sizes.clone();
    let writer = thread::spawn(move || {
        for (i, &len) in to_send.iter().enumerate() {
            send(&w, &tagged(i, len));
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    for (i, &len) in sizes.iter().enumerate() {
        let got = recv(&s).unwrap_or_else(|| panic!("EOF before message {i}"));
        assert_eq!(got.len(), len, "message {i}: length");
        assert!(got == tagged(i, len), "message {i}: content");
    }
    assert_eq!(recv(&s), None, "EOF after the last message");
    writer.join().unwrap();
    let line = p.stats();
    assert_eq!(stat(&line, "frames_in"), sizes.len() as u64);
    assert_eq!(stat(&line, "frames_out"), sizes.len() as u64);
    let total: usize = sizes.iter().sum();
    assert_eq!(stat(&line, "bytes_in"), total as u64);
    assert_eq!(stat(&line, "bytes_out"), total as u64);
    assert!(p.stop().success());
}

#[test]
fn message_of_max_frame_comes_back_at_the_default_limit() {
    // 1 MiB (the default --max-frame) is far past the default socket send
    // buffer (208 KiB): the client raises its own, and the server must
    // raise its too. Linux refuses messages longer than the send buffer
    // minus 32 bytes, and caps buffers at net.core.wmem_max: the message
    // is as long as both allow, and longer than the default buffer.
    const MAX: usize = 1 << 20;
    let (_dir, mut p, path) = serve(&[]);
    let s = connect(&path);
    s.set_send_buffer_size(MAX + 32).unwrap();
    let len = MAX.min(s.send_buffer_size().unwrap() - 32);
    assert!(
        len > 300 << 10,
        "the client could not raise its send buffer"
    );
    let msg = tagged(7, len);
    send(&s, &msg);
    let got = recv(&s).expect("the message comes back");
    assert_eq!(got.len(), len);
    assert!(got == msg);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(recv(&s), None);
    assert!(p.stop().success());
}

#[test]
fn over_long_message_closes_that_connection_only() {
    let (_dir, mut p, path) = serve(&["--max-frame", "1000"]);
    let bystander = connect(&path);
    let s = connect(&path);
    send(&s, &tagged(1, 1000));
    send(&s, &tagged(2, 1001));
    assert_eq!(recv(&s), Some(tagged(1, 1000)), "the message before");
    assert_eq!(recv(&s), None, "closed, never a truncated echo");
    let warn = p.wait_for("exceeds --max-frame 1000");
    assert!(warn.contains("WARN") || warn.contains("warn"), "{warn}");
    assert!(warn.contains("pid=") && warn.contains("uid="), "{warn}");
    // The other connection is untouched.
    send(&bystander, b"still here");
    assert_eq!(recv(&bystander).as_deref(), Some(&b"still here"[..]));
    assert!(p.stop().success());
}

#[test]
fn a_non_reading_peer_is_backpressured_and_loses_nothing() {
    const MAX_BUFFER: usize = 64 << 10;
    const TOTAL: usize = 12 << 20;
    let (_dir, mut p, path) = serve(&["--max-buffer", "64K", "--max-frame", "16K"]);
    let mut rng = Rng(77);
    let mut sizes = Vec::new();
    let mut sum = 0;
    while sum < TOTAL {
        let len = rng.range(1, 16 << 10);
        sizes.push(len);
        sum += len;
    }
    let s = connect(&path);
    // Nobody reads: the writer must come to a stop once the server's
    // output reaches --max-buffer and the kernel queues both ways are full.
    let (next, stalled_at) = send_until_stalled(&s, &sizes, &mut p);
    // Bound: the server's output (max-buffer plus one message) plus two
    // kernel queues (one socket send buffer each way, about 208 KiB).
    let bound = MAX_BUFFER + (16 << 10) + 2 * (512 << 10);
    assert!(
        stalled_at < bound,
        "sent {stalled_at} bytes to a peer that does not read; the server kept reading"
    );
    let line = p.stats();
    assert!(stat(&line, "bytes_in") <= stalled_at as u64);
    // Held back, it does not spin: message sockets are polled
    // level-triggered, and READABLE is dropped while reading is paused
    // (a busy loop burns ~50 ticks in the half second; the sleep is the
    // measuring window).
    let before = common::cpu_ticks(p.pid());
    thread::sleep(Duration::from_millis(500));
    let ticks = common::cpu_ticks(p.pid()) - before;
    assert!(ticks <= 10, "{ticks} ticks of CPU while held back");
    // Now read, while the rest is sent: everything comes back, intact and
    // in order.
    let w = s.try_clone().unwrap();
    let to_send = sizes.clone();
    let writer = thread::spawn(move || {
        for (i, &len) in to_send.iter().enumerate().skip(next) {
            send(&w, &tagged(i, len));
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    for (i, &len) in sizes.iter().enumerate() {
        let got = recv(&s).unwrap_or_else(|| panic!("EOF before message {i}"));
        assert_eq!(got.len(), len, "message {i}: length");
        assert!(got == tagged(i, len), "message {i}: content");
    }
    assert_eq!(recv(&s), None);
    writer.join().unwrap();
    assert!(p.stop().success());
}

/// Sends message `i` = `tagged(i, sizes[i])` in order, nonblocking, until
/// the kernel refuses them (`WouldBlock`: what we sent waits for the
/// server) and the server has stopped reading. That is read from two
/// stats lines, A and B, with a send between them that the kernel
/// refuses: what it waited for then was all there at A (nothing was sent
/// since), and each line costs the server a loop turn, so a server that
/// may still read reads between A and B; an unchanged `bytes_in` means it
/// has stopped. Otherwise room is coming and sending goes on. Returns the
/// index of the first message not sent and the bytes sent; `s` is
/// blocking again on return.
fn send_until_stalled(s: &Socket, sizes: &[usize], p: &mut Proc) -> (usize, usize) {
    let deadline = Instant::now() + PATIENCE;
    s.set_nonblocking(true).unwrap();
    let (mut next, mut sent) = (0, 0);
    // Sends message `next` if the kernel takes it.
    let send = |next: &mut usize, sent: &mut usize| -> bool {
        match s.send(&tagged(*next, sizes[*next])) {
            Ok(n) => {
                assert_eq!(n, sizes[*next], "seqpacket send is whole");
                *sent += n;
                *next += 1;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("send: {e}"),
        }
    };
    for _ in 0..100_000 {
        while next < sizes.len() && send(&mut next, &mut sent) {}
        assert!(
            next < sizes.len(),
            "all {sent} bytes sent to a peer that does not read; the server kept reading"
        );
        let a = stat(&p.stats(), "bytes_in");
        if !send(&mut next, &mut sent) && stat(&p.stats(), "bytes_in") == a {
            s.set_nonblocking(false).unwrap();
            return (next, sent);
        }
        assert!(
            Instant::now() < deadline,
            "the server neither stopped reading nor let {sent} bytes through"
        );
    }
    panic!("the server neither stopped reading nor let {sent} bytes through");
}

#[test]
fn half_close_gets_everything_owed_then_eof() {
    let (_dir, mut p, path) = serve(&[]);
    let s = connect(&path);
    // Small enough to sit in the kernel queues while we do not read.
    for i in 0..40 {
        send(&s, &tagged(i, 100 + i));
    }
    s.shutdown(Shutdown::Write).unwrap();
    for i in 0..40 {
        assert_eq!(recv(&s), Some(tagged(i, 100 + i)), "message {i}");
    }
    assert_eq!(recv(&s), None, "EOF once everything owed is written");
    assert!(p.stop().success());
}

#[test]
fn zero_length_message_is_taken_as_eof() {
    let (_dir, mut p, path) = serve(&[]);
    let s = connect(&path);
    send(&s, b"first");
    send(&s, b"second");
    send(&s, b"");
    assert_eq!(recv(&s).as_deref(), Some(&b"first"[..]));
    assert_eq!(recv(&s).as_deref(), Some(&b"second"[..]));
    assert_eq!(recv(&s), None, "the server closed after the empty message");
    // The server closed its end: sending now fails.
    let err = loop {
        match s.send_with_flags(b"late", libc::MSG_NOSIGNAL) {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
    let line = p.stats();
    assert_eq!(stat(&line, "closed"), 1);
    assert_eq!(stat(&line, "frames_in"), 2);
    assert!(p.stop().success());
}

/// Answers each message with two: its bytes reversed, then its length.
struct ReverseAndCount;

impl Handler for ReverseAndCount {
    type State = u64;

    fn open(&mut self, _: &mut Context<'_>) -> u64 {
        u64::default()
    }

    fn frame(&mut self, seen: &mut u64, frame: Frame<'_>, cx: &mut Context<'_>) {
        *seen += 1;
        assert!(cx.reply_to().is_none(), "connections have no reply address");
        let mut reversed = frame.payload().to_vec();
        reversed.reverse();
        cx.send(&reversed).expect("a short reply fits");
        cx.send(format!("{} #{seen}", frame.payload().len()).as_bytes())
            .expect("a short reply fits");
    }
}

#[test]
fn library_runs_a_custom_handler_over_seqpacket() {
    let dir = TempDir::new("seqpacket-lib");
    let path = dir.path("lib.sock");
    let mut config = Config::new(&path);
    config.socket_type = SocketType::Seqpacket;
    let server = Library::start(config, ReverseAndCount);

    let s = connect(&path);
    for (i, msg) in [&b"abc"[..], b"x", b"hello world"].iter().enumerate() {
        send(&s, msg);
        let mut reversed = msg.to_vec();
        reversed.reverse();
        assert_eq!(recv(&s), Some(reversed));
        let count = format!("{} #{}", msg.len(), i + 1);
        assert_eq!(recv(&s), Some(count.into_bytes()));
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(recv(&s), None);

    let stats = server.stop();
    assert_eq!(stats.frames_in, 3);
    assert_eq!(stats.frames_out, 6);
    assert!(!path.exists());
}

/// Runs the binary expecting a usage error; returns its stderr.
fn usage_error(args: &[&str]) -> String {
    let out = Command::new(common::bin())
        .args(args)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status for {args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn line_or_length_framing_with_message_sockets_is_a_usage_error() {
    let dir = TempDir::new("seqpacket-usage");
    let path = dir.path("u.sock");
    let path = path.to_str().unwrap();
    for ty in ["seqpacket", "dgram"] {
        for framing in ["line", "length"] {
            let err = usage_error(&[path, "--type", ty, "--framing", framing]);
            let first = err.lines().next().unwrap_or("");
            assert!(
                first.starts_with("error:") && first.contains(&format!("--framing {framing}")),
                "{ty}/{framing}: {err}"
            );
            assert!(!common::exists(Path::new(path)), "nothing bound");
        }
    }
    // raw is what message sockets are anyway: accepted.
    let mut p = Proc::serve(&[path, "--type", "seqpacket", "--framing", "raw"]);
    assert!(p.stop().success());
}

/// Answers each message with three: an empty one, the message, "end".
struct WithEmpty;

impl Handler for WithEmpty {
    type State = ();

    fn open(&mut self, _: &mut Context<'_>) {}

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        cx.send(b"").expect("a short reply fits");
        cx.send(frame.payload()).expect("a short reply fits");
        cx.send(b"end").expect("a short reply fits");
    }
}

#[test]
fn library_handler_may_send_empty_messages() {
    let dir = TempDir::new("seqpacket-empty");
    let path = dir.path("lib.sock");
    let mut config = Config::new(&path);
    config.socket_type = SocketType::Seqpacket;
    let server = Library::start(config, WithEmpty);

    let s = connect(&path);
    send(&s, b"one");
    send(&s, b"two");
    // An empty message reads as a zero-length read, like EOF; the peer
    // knows its protocol and reads on.
    for msg in [&b"one"[..], b"two"] {
        assert_eq!(recv(&s), None, "the empty message: a zero-length read");
        assert_eq!(recv(&s).as_deref(), Some(msg));
        assert_eq!(recv(&s).as_deref(), Some(&b"end"[..]));
    }
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(recv(&s), None, "closed once everything is written");
    let stats = server.stop();
    assert_eq!(stats.frames_out, 6);
}
