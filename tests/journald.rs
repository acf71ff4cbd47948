//! journald priorities against the real binary: with `JOURNAL_STREAM`
//! naming the device and inode of the file the server's stderr goes to,
//! every line starts with its sd-daemon priority (`<4>` warn, `<6>` info,
//! `<7>` debug) and carries no time; without it, or naming another file,
//! lines are simplelog's as before.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, exit_within, TempDir, PATIENCE};

/// How the server's stderr is described to it.
enum Stream {
    /// `JOURNAL_STREAM` is the dev:inode of the log file.
    Journal,
    /// `JOURNAL_STREAM` names some other file.
    Elsewhere,
    /// No `JOURNAL_STREAM`.
    Unset,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Kills the server if the test fails before it exits.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits until the log file holds `needle`.
fn wait_for(log: &Path, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !read(log).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            read(log)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a debug-level server on an abstract address (which warns that
/// file permissions do not apply), serves one echo, stops it, and gives
/// back everything it wrote to stderr.
fn logged_run(tag: &str, stream: Stream) -> String {
    let dir = TempDir::new(tag);
    let log_path = dir.path("stderr");
    let log = File::create(&log_path).unwrap();
    let name = format!("udsr-journal-{tag}-{}", std::process::id());
    let mut cmd = Command::new(bin());
    cmd.args([&format!("@{name}"), "--log-level", "debug"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .env_remove("JOURNAL_STREAM");
    let meta = match stream {
        Stream::Journal => Some(log.metadata().unwrap()),
        Stream::Elsewhere => Some(std::fs::metadata(&dir.0).unwrap()),
        Stream::Unset => None,
    };
    if let Some(m) = meta {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    }
    let mut child = Running(cmd.stderr(log).spawn().expect("spawn uds-reactor"));
    wait_for(&log_path, "listening on");

    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut s = UnixStream::connect_addr(&addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    s.read_exact(&mut got).expect("echo");
    drop(s);
    wait_for(&log_path, "closed");

    common::signal(child.0.id() as i32, 15);
    assert!(exit_within(&mut child.0, "the server").success());
    read(&log_path)
}

/// `2026-11-24T13:31:55...`: an RFC 3339 time anywhere in the line.
fn has_time(line: &str) -> bool {
    line.as_bytes().windows(11).any(|w| {
        w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[7] == b'-' && w[10] == b'T'
    })
}

/// The line containing `needle`.
fn line<'a>(log: &'a str, needle: &str) -> &'a str {
    log.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
}

#[test]
fn under_journald_lines_carry_priorities_and_no_time() {
    let log = logged_run("journal", Stream::Journal);
    for l in log.lines() {
        let prefixed = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .any(|p| l.starts_with(p));
        assert!(prefixed, "no priority prefix: {l:?} in\n{log}");
        assert!(!has_time(l), "a timestamp under journald: {l:?}");
    }
    assert!(line(&log, "listening on @udsr-journal").starts_with("<6>listening on"));
    assert!(line(&log, "is an abstract address").starts_with("<4>"));
    assert!(line(&log, "accepted").starts_with("<7>accepted"));
    assert!(line(&log, "stats open=").starts_with("<6>stats open=0"));
}

#[test]
fn on_a_terminal_or_file_lines_are_unchanged() {
    for (tag, stream) in [("plain", Stream::Unset), ("elsewhere", Stream::Elsewhere)] {
        let log = logged_run(tag, stream);
        assert!(!log.is_empty());
        for l in log.lines() {
            assert!(!l.starts_with('<'), "a priority prefix off journald: {l:?}");
            assert!(has_time(l), "no timestamp: {l:?}");
        }
        assert!(line(&log, "listening on").contains("[INFO] listening on"));
        assert!(line(&log, "is an abstract address").contains("[WARN]"));
        assert!(line(&log, "accepted").contains("[DEBUG]"));
    }
}
