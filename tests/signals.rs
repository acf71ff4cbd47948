//! Running and stopping (SPEC "Running", "Command line"): SIGTERM/SIGINT
//! flush and exit 0 promptly, SIGUSR1 logs the counters and carries on, and
//! exit statuses: 2 for usage errors, 1 for runtime errors, one message,
//! never a panic.

mod common;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use common::{bin, connect, exists, pattern, stat, Proc, TempDir, PATIENCE};

const SIGINT: i32 = 2;
const SIGUSR1: i32 = 10;
const SIGTERM: i32 = 15;

/// Runs the binary to completion; returns its status and its whole stderr.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    common::run_to_exit(Command::new(bin()).args(args))
}

fn echo(s: &mut UnixStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn sigterm_and_sigint_exit_0_and_remove_the_file() {
    let dir = TempDir::new("sig-stop");
    for (signal, name) in [(SIGTERM, "TERM"), (SIGINT, "INT")] {
        let path = dir.path(&format!("{name}.sock"));
        // A long drain timeout: exiting promptly must not wait for it.
        let mut server = Proc::serve(&[path.to_str().unwrap(), "--drain-timeout", "60"]);
        // Idle connections with nothing owed do not delay the exit.
        let mut idle: Vec<UnixStream> = (0..5).map(|_| connect(&path)).collect();
        echo(&mut idle[0], b"hello");
        let started = Instant::now();
        server.signal(signal);
        let status = server.wait_exit();
        let took = started.elapsed();
        assert_eq!(status.code(), Some(0), "SIG{name}: {}", server.log_text());
        assert!(
            took < Duration::from_secs(5),
            "SIG{name}: exit took {took:?}"
        );
        assert!(!exists(&path), "SIG{name}: socket file left behind");
        // The counters at shutdown.
        let line = server.wait_for("stats open=");
        assert_eq!(stat(&line, "accepted"), 5, "{line}");
        assert_eq!(stat(&line, "bytes_in"), 5, "{line}");
        assert_eq!(stat(&line, "bytes_out"), 5, "{line}");
        assert_eq!(stat(&line, "open"), 0, "{line}");
        // The peers see EOF.
        for s in &mut idle {
            let mut b = [0; 1];
            assert_eq!(s.read(&mut b).unwrap(), 0);
        }
    }
}

/// A peer that is owed output when the signal arrives gets all of it, then
/// EOF; the server exits as soon as that is done, not at the drain timeout.
/// Writes to `owed` without reading until the server stops taking bytes:
/// its output buffer is full and the socket buffers too. A stall alone
/// could be the server descheduled on a busy machine, so its counters
/// confirm it has taken more than its --max-buffer (256 KiB).
fn fill_until_owed(server: &mut Proc, owed: &mut UnixStream) {
    owed.set_nonblocking(true).unwrap();
    let data = pattern(1, 8 << 20);
    let mut sent = 0;
    let deadline = Instant::now() + PATIENCE;
    let mut blocked_since: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline && sent < data.len());
        if blocked_since.is_some_and(|t| t.elapsed() >= Duration::from_millis(300)) {
            server.signal(SIGUSR1);
            if stat(&server.wait_for("stats open="), "bytes_in") > 256 << 10 {
                break;
            }
            blocked_since = None;
        }
        match owed.write(&data[sent..(sent + 65536).min(data.len())]) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                blocked_since.get_or_insert_with(Instant::now);
                thread::yield_now();
            }
            Err(e) => panic!("write: {e}"),
        }
    }
}

#[test]
fn pending_output_is_flushed_before_exit() {
    let dir = TempDir::new("sig-flush");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap(), "--drain-timeout", "60"]);
    let mut owed = connect(&path);
    fill_until_owed(&mut server, &mut owed);
    let data = pattern(1, 8 << 20); // what fill_until_owed wrote a prefix of
    owed.set_nonblocking(false).unwrap();

    server.signal(SIGTERM);
    server.wait_for("shutting down");
    // No longer accepting: the file goes before the drain ends.
    let deadline = Instant::now() + PATIENCE;
    while exists(&path) {
        assert!(
            Instant::now() < deadline,
            "socket file still there while draining"
        );
        thread::sleep(Duration::from_millis(5));
    }
    assert!(UnixStream::connect(&path).is_err());

    let started = Instant::now();
    // All owed bytes, then the end: EOF, or ECONNRESET since the server
    // closes with our unread input still queued (Linux reports that only
    // once the data before it has been read).
    let mut got = Vec::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        match owed.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read until the server closes: {e}"),
        }
    }
    let status = server.wait_exit();
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(5),
        "exit took {took:?} after the flush"
    );

    let line = server.wait_for("stats open=");
    let taken = stat(&line, "bytes_in") as usize;
    // Everything the server read came back, in order; what it had not
    // read yet when the signal came is not echoed.
    assert_eq!(stat(&line, "bytes_out") as usize, taken, "{line}");
    assert_eq!(got.len(), taken, "{line}");
    assert!(got[..] == data[..taken], "flushed output differs");
    // More than the socket buffers hold: the server's own buffered output
    // was flushed, not only what the kernel held.
    assert!(taken > 256 << 10, "only {taken} bytes were owed: {line}");
    eprintln!("flushed {taken} owed bytes after SIGTERM; exit {took:?} after the signal");
}

/// A peer that never reads does not keep the server for longer than
/// `--drain-timeout`.
#[test]
fn drain_timeout_bounds_the_exit() {
    let dir = TempDir::new("sig-drain");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap(), "--drain-timeout", "0.5"]);
    let stuck = connect(&path);
    let mut s2 = stuck.try_clone().unwrap();
    // Fill the server's output; this writer blocks for good.
    let _writer = thread::spawn(move || {
        let _ = s2.write_all(&pattern(2, 8 << 20));
    });
    // Wait until the server owes output (bytes_in > 0), then stop it.
    let deadline = Instant::now() + PATIENCE;
    loop {
        server.signal(SIGUSR1);
        let line = server.wait_for("stats open=");
        if stat(&line, "bytes_in") > 256 << 10 {
            break;
        }
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit().code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "exit after {took:?} with --drain-timeout 0.5"
    );
    server.wait_for("not flushed within the drain timeout");
    let _ = stuck.shutdown(Shutdown::Both);
}

#[test]
fn sigusr1_logs_counters_and_carries_on() {
    let dir = TempDir::new("sig-usr1");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);
    let mut a = connect(&path);
    echo(&mut a, &[7; 1000]);
    {
        let mut b = connect(&path);
        echo(&mut b, &[8; 24]);
    }
    // `b` is closed; wait until the server has noticed.
    let deadline = Instant::now() + PATIENCE;
    let line = loop {
        server.signal(SIGUSR1);
        let line = server.wait_for("stats open=");
        if stat(&line, "closed") == 1 {
            break line;
        }
        assert!(Instant::now() < deadline, "{line}");
        thread::sleep(Duration::from_millis(10));
    };
    assert!(line.contains("[INFO]"), "{line}");
    assert_eq!(stat(&line, "open"), 1, "{line}");
    assert_eq!(stat(&line, "accepted"), 2, "{line}");
    assert_eq!(stat(&line, "rejected"), 0, "{line}");
    assert_eq!(stat(&line, "bytes_in"), 1024, "{line}");
    assert_eq!(stat(&line, "bytes_out"), 1024, "{line}");
    for key in ["frames_in", "frames_out", "dropped"] {
        stat(&line, key);
    }
    // Exactly one line per signal.
    let count = |p: &Proc| {
        p.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("stats open="))
            .count()
    };
    let before = count(&server);
    server.signal(SIGUSR1);
    server.wait_for("stats open=");
    // Carries on: still serving, on the same and on new connections.
    echo(&mut a, b"still here");
    echo(&mut connect(&path), b"new one");
    assert_eq!(count(&server), before + 1);
    assert!(exists(&path));
    drop(a);
    assert!(server.stop().success());
    let last = server.wait_for("stats open=");
    assert_eq!(stat(&last, "accepted"), 3, "{last}");
    assert_eq!(stat(&last, "bytes_in"), 1024 + 10 + 7, "{last}");
}

#[test]
fn usage_errors_exit_2_naming_the_option() {
    let dir = TempDir::new("sig-usage");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--no-such-flag", p], "--no-such-flag"),
        (&["--max-buffer", "12Q", p], "--max-buffer"),
        (&["--max-frame", "1X", p], "--max-frame"),
        (&["--type", "dgram", "--framing", "line", p], "--framing"),
        (&["--type", "dgram", "--framing", "length", p], "--framing"),
        (&["--type", "bogus", p], "--type"),
        (&["--mode", "999", p], "--mode"),
        (&["--mode", "rwx", p], "--mode"),
        (&["--drain-timeout", "soon", p], "--drain-timeout"),
        (
            &["--log-level", "loud", p],
            "off, error, warn, info, debug, trace",
        ),
        (&["--backlog", "-1", p], "--backlog must be at least 1"),
        (&["--idle-timeout", "-1", p], "--idle-timeout"),
        (&["--group", "4294967295", p], "--group"),
        (&[""], "PATH is empty"),
        (&[], "PATH"),
    ];
    for (args, option) in cases {
        let (status, stderr) = run_to_exit(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(
            errors[0].contains(option),
            "{args:?} should name {option}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!exists(&path), "{args:?} created the socket");
    }
}

#[test]
fn runtime_errors_exit_1_with_one_line_naming_path_and_step() {
    let dir = TempDir::new("sig-runtime");
    let missing = dir.path("nope").join("s.sock");
    let file = dir.path("file");
    std::fs::write(&file, b"x").unwrap();
    let live = dir.path("live.sock");
    let mut server = Proc::serve(&[live.to_str().unwrap()]);
    for path in [&missing, &file, &live] {
        let p = path.to_str().unwrap();
        let (status, stderr) = run_to_exit(&[p]);
        assert_eq!(status.code(), Some(1), "{p}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{p}: {stderr}");
        assert!(stderr.contains(&format!("bind {p}: ")), "{p}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(server.stop().success());
}

#[test]
fn a_second_signal_ends_the_drain_at_once() {
    let dir = TempDir::new("signals-second");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap(), "--drain-timeout", "60"]);
    // A peer that writes without reading leaves output owed at shutdown.
    let mut s = connect(&path);
    fill_until_owed(&mut server, &mut s);
    server.signal(libc::SIGTERM);
    server.wait_for("shutting down: flushing 1 connection ");
    server.signal(libc::SIGINT);
    server.wait_for("second signal: exiting now without flushing 1 connection");
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(!path.exists());
}

/// SIGHUP stops the server like SIGTERM; but when it was ignored at
/// start (`nohup`: the disposition is inherited, so this test process
/// running under nohup passes it on), it is left ignored.
#[test]
fn sighup_stops_like_sigterm_and_removes_the_file() {
    let dir = TempDir::new("signals-hup");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);
    server.signal(libc::SIGHUP);
    if sighup_ignored_here() {
        // Under nohup: the server must carry on serving.
        let mut s = connect(&path);
        s.write_all(b"still here").unwrap();
        let mut back = [0; 10];
        s.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"still here");
        server.signal(libc::SIGTERM);
    }
    let status = server.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(!path.exists());
}

/// Whether this process ignores SIGHUP (bit 0 of `SigIgn` in
/// /proc/self/status), as a child started under `nohup` does.
fn sighup_ignored_here() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("SigIgn");
    mask & 1 != 0
}
