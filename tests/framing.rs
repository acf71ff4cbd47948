//! Stream framings (`--framing raw|line|length`) over real sockets against
//! the binary: frames split at every byte boundary, each echoed whole;
//! oversized frames close only their connection with a warn line naming
//! the peer; line tails and partial length frames at EOF; no memory
//! reserved for a frame before its bytes arrive.
//!
//! To know the server has *read* some bytes (so a split really is two
//! reads), tests send SIGUSR1 and wait for the stats line to count them:
//! the server counts bytes, decodes them and writes the replies in one
//! step, so by then every reply to them is in our socket's queue.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Instant;

use common::{stat, Proc, TempDir, PATIENCE};

/// A server under test with its directory and a running count of the
/// bytes sent to it (for [`Server::sync`]).
struct Server {
    proc: Proc,
    path: PathBuf,
    sent: u64,
    _dir: TempDir,
}

impl Server {
    /// Starts the binary with `--framing framing` and `extra` options.
    fn start(framing: &str, extra: &[&str]) -> Server {
        let dir = TempDir::new("framing");
        let path = dir.path("s.sock");
        let mut args = vec!["--framing", framing];
        args.extend_from_slice(extra);
        args.push(path.to_str().expect("utf-8 temp path"));
        Server {
            proc: Proc::serve(&args),
            path,
            sent: 0,
            _dir: dir,
        }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s
    }

    /// Writes `bytes` on `s`, counting them for [`sync`](Self::sync).
    fn send(&mut self, s: &mut UnixStream, bytes: &[u8]) {
        s.write_all(bytes).expect("write");
        self.sent += bytes.len() as u64;
    }

    /// Waits until the server has read every byte [`send`](Self::send)
    /// wrote (and so has written every reply to them).
    fn sync(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let read = self.bytes_in();
            if read >= self.sent {
                assert_eq!(read, self.sent, "the server read bytes we did not send");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server read {read} of {} bytes",
                self.sent
            );
        }
    }

    /// The server's `bytes_in` counter, asked for with SIGUSR1.
    fn bytes_in(&mut self) -> u64 {
        self.proc.signal(10);
        let line = self.proc.wait_for("stats open=");
        stat(&line, "bytes_in")
    }

    /// Waits for a log line containing `needle` and checks that it is a
    /// warning naming this process as the peer.
    fn expect_warn_about_us(&mut self, needle: &str) -> String {
        let line = self.proc.wait_for(needle);
        assert!(line.contains("WARN"), "not a warning: {line}");
        assert!(
            line.contains(&who_am_i()),
            "peer not named as {}: {line}",
            who_am_i()
        );
        line
    }
}

/// `pid=.. uid=.. gid=..` of this process, as the server logs its peers.
fn who_am_i() -> String {
    // /proc/self belongs to the process's effective uid and gid.
    let me = std::fs::metadata("/proc/self").expect("stat /proc/self");
    format!(
        "pid={} uid={} gid={}",
        std::process::id(),
        me.uid(),
        me.gid()
    )
}

/// Reads until the server closes: EOF, or ECONNRESET when it closed with
/// bytes of ours unread (Linux reports the reset only after the queued
/// data). Returns what was read.
fn read_until_closed(s: &mut UnixStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e} (after {} bytes)", got.len()),
        }
    }
}

/// Whatever is queued on `s` right now, without waiting.
fn read_queued(s: &mut UnixStream) -> Vec<u8> {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    s.set_nonblocking(false).unwrap();
    got
}

/// Asserts the server echoes `input` on a fresh connection.
fn assert_echo(server: &mut Server, s: &mut UnixStream, input: &[u8]) {
    server.send(s, input);
    let mut got = vec![0; input.len()];
    s.read_exact(&mut got).expect("read echo");
    assert_eq!(got, input);
}

/// A length frame: big-endian header, then the payload.
fn length_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A message of several frames and the offsets where each frame ends.
struct Message {
    framing: &'static str,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Message {
    fn all() -> Vec<Message> {
        let raw = b"hello, world".to_vec();
        // An empty line among them.
        let line = b"ab\n\ncdef\nxyz\n".to_vec();
        // A zero-length frame among them.
        let length = [length_frame(b"abc"), length_frame(b""), length_frame(b"de")].concat();
        vec![
            Message {
                framing: "raw",
                // Raw: every chunk read is a frame, so any prefix is whole.
                ends: (1..=raw.len()).collect(),
                bytes: raw,
            },
            Message {
                framing: "line",
                ends: vec![3, 4, 9, 13],
                bytes: line,
            },
            Message {
                framing: "length",
                ends: vec![7, 11, 17],
                bytes: length,
            },
        ]
    }

    /// What the server must have echoed once it has read `bytes[..i]`:
    /// the frames complete within it, and nothing of the next one.
    fn echoed_after(&self, i: usize) -> &[u8] {
        let end = self
            .ends
            .iter()
            .copied()
            .filter(|&e| e <= i)
            .max()
            .unwrap_or(0);
        &self.bytes[..end]
    }
}

#[test]
fn frames_split_at_every_byte_boundary_are_echoed_whole() {
    for m in Message::all() {
        let mut server = Server::start(m.framing, &[]);
        for i in 0..=m.bytes.len() {
            let mut s = server.connect();
            server.send(&mut s, &m.bytes[..i]);
            server.sync();
            let first = read_queued(&mut s);
            assert_eq!(
                first,
                m.echoed_after(i),
                "{} split at {i}: first read",
                m.framing
            );
            server.send(&mut s, &m.bytes[i..]);
            s.shutdown(Shutdown::Write).unwrap();
            let rest = read_until_closed(&mut s);
            assert_eq!(
                [first, rest].concat(),
                m.bytes,
                "{} split at {i}: whole echo",
                m.framing
            );
        }
        server.proc.stop();
    }
}

#[test]
fn frames_fed_one_byte_per_read_are_echoed_whole() {
    for m in Message::all() {
        let mut server = Server::start(m.framing, &[]);
        let mut s = server.connect();
        let mut echoed = Vec::new();
        for i in 1..=m.bytes.len() {
            server.send(&mut s, &m.bytes[i - 1..i]);
            server.sync();
            echoed.extend(read_queued(&mut s));
            assert_eq!(echoed, m.echoed_after(i), "{} after {i} bytes", m.framing);
        }
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            read_until_closed(&mut s),
            b"",
            "{}: nothing after EOF",
            m.framing
        );
        server.proc.stop();
    }
}

#[test]
fn many_frames_in_one_write_are_all_echoed() {
    let cases = [
        ("line", b"x\n".repeat(5000)),
        ("length", length_frame(b"yz").repeat(5000)),
    ];
    for (framing, bytes) in cases {
        let mut server = Server::start(framing, &[]);
        let mut s = server.connect();
        server.send(&mut s, &bytes);
        s.shutdown(Shutdown::Write).unwrap();
        assert!(read_until_closed(&mut s) == bytes, "{framing}");
        server.proc.stop();
    }
}

#[test]
fn oversized_lines_close_only_their_connection() {
    let mut server = Server::start("line", &["--max-frame", "16"]);
    let mut bystander = server.connect();
    assert_echo(&mut server, &mut bystander, b"hello\n");

    // Exactly --max-frame bytes before the `\n` is fine.
    let mut s = server.connect();
    let full = [vec![b'x'; 16], b"\n".to_vec()].concat();
    assert_echo(&mut server, &mut s, &full);
    // One more byte, no `\n` yet: the line can only be too long.
    server.send(&mut s, &[b'y'; 17]);
    assert_eq!(read_until_closed(&mut s), b"");
    server.expect_warn_about_us("frame of 17 bytes exceeds --max-frame 16");

    // A long terminated line, after a good one in the same write: the good
    // one is echoed, then the connection closes.
    let mut s = server.connect();
    server.send(
        &mut s,
        &[b"ok\n".to_vec(), vec![b'z'; 40], b"\n".to_vec()].concat(),
    );
    assert_eq!(read_until_closed(&mut s), b"ok\n");
    server.expect_warn_about_us("frame of 40 bytes exceeds --max-frame 16");

    // A line growing past the limit across reads.
    let mut s = server.connect();
    server.send(&mut s, &[b'w'; 10]);
    server.sync();
    server.send(&mut s, &[b'w'; 10]);
    assert_eq!(read_until_closed(&mut s), b"");
    server.expect_warn_about_us("frame of 20 bytes exceeds --max-frame 16");

    assert_echo(&mut server, &mut bystander, b"still here\n");
    assert!(server.proc.stop().success());
}

#[test]
fn oversized_length_headers_close_only_their_connection() {
    let mut server = Server::start("length", &["--max-frame", "16"]);
    let mut bystander = server.connect();
    assert_echo(&mut server, &mut bystander, &length_frame(b"hello"));

    let mut s = server.connect();
    assert_echo(&mut server, &mut s, &length_frame(&[7; 16]));
    // Only the header: the server must not wait for the 17 bytes.
    server.send(&mut s, &17u32.to_be_bytes());
    assert_eq!(read_until_closed(&mut s), b"");
    server.expect_warn_about_us("frame of 17 bytes exceeds --max-frame 16");

    let mut s = server.connect();
    server.send(&mut s, &[0xFF; 4]);
    assert_eq!(read_until_closed(&mut s), b"");
    server.expect_warn_about_us("frame of 4294967295 bytes exceeds --max-frame 16");

    // The header itself split across reads, after a good frame.
    let mut s = server.connect();
    server.send(&mut s, &[length_frame(b"ok"), vec![0, 0]].concat());
    server.sync();
    server.send(&mut s, &[1, 0]);
    assert_eq!(read_until_closed(&mut s), length_frame(b"ok"));
    server.expect_warn_about_us("frame of 256 bytes exceeds --max-frame 16");

    assert_echo(&mut server, &mut bystander, &length_frame(b"still here"));
    assert_echo(&mut server, &mut bystander, &length_frame(b""));
    assert!(server.proc.stop().success());
}

#[test]
fn line_tail_at_eof_is_echoed_as_is() {
    let mut server = Server::start("line", &[]);
    for input in [&b"ab\ncd"[..], b"no newline at all", b"", b"\n\n"] {
        let mut s = server.connect();
        server.send(&mut s, input);
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_closed(&mut s), input);
    }
    // Received as a partial line first, then ended.
    let mut s = server.connect();
    server.send(&mut s, b"one\ntw");
    server.sync();
    assert_eq!(read_queued(&mut s), b"one\n");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut s), b"tw");
    assert!(server.proc.stop().success());
}

#[test]
fn zero_length_frame_is_echoed() {
    let mut server = Server::start("length", &[]);
    let mut s = server.connect();
    assert_echo(&mut server, &mut s, &[0; 4]);
    assert_echo(&mut server, &mut s, &[0; 12]);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    let stats = server.proc.stop();
    assert!(stats.success());
    let line = server.proc.wait_for("stats open=");
    assert_eq!(stat(&line, "frames_in"), 4);
    assert_eq!(stat(&line, "frames_out"), 4);
}

#[test]
fn partial_length_frame_at_eof_is_dropped_and_logged() {
    let mut server = Server::start("length", &[]);
    let whole = length_frame(b"kept");
    // A payload cut short, and a header cut short.
    for (partial, dropped) in [(vec![0, 0, 0, 5, b'a', b'b'], 6), (vec![0, 0], 2)] {
        let mut s = server.connect();
        server.send(&mut s, &[whole.clone(), partial].concat());
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(
            read_until_closed(&mut s),
            whole,
            "nothing of the partial frame"
        );
        let line = server.proc.wait_for("ended inside a frame");
        assert!(line.contains(&format!("dropped {dropped} bytes")), "{line}");
        assert!(line.contains(&who_am_i()), "{line}");
    }
    assert!(server.proc.stop().success());
    let line = server.proc.wait_for("stats open=");
    assert_eq!(stat(&line, "dropped"), 2);
}

/// VmSize of a process in KiB: what it has reserved, touched or not.
fn vm_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize")
}

/// A header announcing `announced` bytes, then `sent` bytes of payload:
/// the server's memory (reserved or resident) grows with what arrived, not
/// with what was announced.
fn assert_no_reservation(max_frame: &str, announced: u32, sent: usize) {
    let mut server = Server::start("length", &["--max-frame", max_frame]);
    let pid = server.proc.pid();
    let mut s = server.connect();
    server.send(&mut s, &[0; 4]);
    server.sync();
    let (vm0, rss0) = (vm_kib(pid), server.proc.rss_kib());

    server.send(&mut s, &announced.to_be_bytes());
    server.send(&mut s, &common::pattern(7, sent));
    server.sync();
    let (vm1, rss1) = (vm_kib(pid), server.proc.rss_kib());
    let sent_kib = (sent / 1024) as u64;
    // Buffers double as they grow: at most twice what arrived, plus slack.
    let bound = 2 * sent_kib + 8 * 1024;
    assert!(
        vm1 <= vm0 + bound,
        "VmSize {vm0} -> {vm1} KiB for {sent_kib} KiB received"
    );
    assert!(
        rss1 <= rss0 + bound,
        "RSS {rss0} -> {rss1} KiB for {sent_kib} KiB received"
    );

    // Still being served (not closed), and nothing echoed of the partial frame.
    assert_eq!(read_queued(&mut s), [0; 4]);
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_until_closed(&mut s), b"");
    let line = server.proc.wait_for("ended inside a frame");
    assert!(
        line.contains(&format!("dropped {} bytes", 4 + sent)),
        "{line}"
    );
    assert!(server.proc.stop().success());
}

#[test]
fn a_header_announcing_a_gibibyte_reserves_nothing() {
    assert_no_reservation("2G", 1 << 30, 256 << 10);
}

#[test]
fn the_largest_header_with_the_largest_max_frame_reserves_nothing() {
    assert_no_reservation("4294967295", u32::MAX, 64 << 10);
}

#[test]
fn max_frame_must_fit_a_length_header() {
    let dir = TempDir::new("framing-cfg");
    let path = dir.path("s.sock");
    let out = std::process::Command::new(common::bin())
        .args(["--framing", "length", "--max-frame", "4G"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-frame"), "{stderr}");
    assert!(!common::exists(&path));
}
