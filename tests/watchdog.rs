//! The systemd watchdog against the real binary: with `WATCHDOG_USEC` (and
//! `WATCHDOG_PID` unset or the server's own), `WATCHDOG=1` arrives on the
//! test's `NOTIFY_SOCKET` at least every half period; without it, or with
//! another process's `WATCHDOG_PID`, never.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, Proc, TempDir, PATIENCE};

/// The period the tests ask for: pings are due every 200 ms.
const PERIOD: Duration = Duration::from_millis(400);

fn notify_socket(path: &Path) -> UnixDatagram {
    let s = UnixDatagram::bind(path).expect("bind the notify socket");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

fn recv_state(s: &UnixDatagram) -> String {
    let mut buf = [0; 256];
    let n = s.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Every notification already queued, without waiting.
fn queued_states(s: &UnixDatagram) -> Vec<String> {
    s.set_nonblocking(true).unwrap();
    let mut states = Vec::new();
    let mut buf = [0; 256];
    loop {
        match s.recv(&mut buf) {
            Ok(n) => states.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return states,
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
}

fn echo(path: &Path) {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"ping");
}

/// Waits for `n` pings and returns the gaps between them.
fn ping_gaps(notify: &UnixDatagram, n: usize) -> Vec<Duration> {
    let mut at = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while at.len() < n {
        assert!(Instant::now() < deadline, "only {} pings", at.len());
        match recv_state(notify).as_str() {
            "WATCHDOG=1" => at.push(Instant::now()),
            "READY=1" => {}
            other => panic!("unexpected notification {other:?}"),
        }
    }
    at.windows(2).map(|w| w[1] - w[0]).collect()
}

fn assert_cadence(gaps: &mut [Duration]) {
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    let half = PERIOD / 2;
    assert!(
        median >= half * 3 / 4 && median <= half * 3 / 2,
        "pings every {median:?}, not about every {half:?}: {gaps:?}"
    );
    let longest = gaps[gaps.len() - 1];
    assert!(
        longest < PERIOD,
        "a gap of {longest:?} would let systemd's {PERIOD:?} watchdog fire"
    );
}

#[test]
fn pings_every_half_period() {
    let dir = TempDir::new("watchdog");
    let path = dir.path("s.sock");
    let notify_path = dir.path("notify");
    let notify = notify_socket(&notify_path);

    let mut cmd = Command::new(bin());
    cmd.arg(&path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", PERIOD.as_micros().to_string())
        .env_remove("WATCHDOG_PID");
    let mut server = Proc::spawn_cmd(&mut cmd);
    assert_eq!(recv_state(&notify), "READY=1");
    let mut gaps = ping_gaps(&notify, 5);
    assert_cadence(&mut gaps);
    echo(&path); // and serving meanwhile
    assert!(server.stop().success());
}

/// `WATCHDOG_PID` naming the server itself (systemd sets it so a child
/// does not take the variables for its own): pings go out.
#[test]
fn pings_when_watchdog_pid_is_ours() {
    let dir = TempDir::new("watchdog-pid");
    let path = dir.path("s.sock");
    let notify_path = dir.path("notify");
    let notify = notify_socket(&notify_path);

    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"WATCHDOG_PID=$$ exec "$0" "$1""#)
        .arg(bin())
        .arg(&path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", PERIOD.as_micros().to_string());
    let mut server = Proc::spawn_cmd(&mut cmd);
    let mut gaps = ping_gaps(&notify, 3);
    assert_cadence(&mut gaps);
    assert!(server.stop().success());
}

/// Runs a server with `env` until it has answered an echo and stopped,
/// and returns every notification it sent.
fn states_of_a_run(tag: &str, env: &[(&str, &str)]) -> Vec<String> {
    let dir = TempDir::new(tag);
    let path = dir.path("s.sock");
    let notify_path = dir.path("notify");
    let notify = notify_socket(&notify_path);
    let mut cmd = Command::new(bin());
    cmd.arg(&path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut server = Proc::spawn_cmd(&mut cmd);
    assert_eq!(recv_state(&notify), "READY=1");
    // A watchdog pings on the loop's first turn, before the echo is
    // served: had one been armed, its ping would be queued by now.
    echo(&path);
    assert!(server.stop().success());
    queued_states(&notify)
}

#[test]
fn no_pings_without_watchdog_usec() {
    let states = states_of_a_run("watchdog-none", &[]);
    assert_eq!(states, ["STOPPING=1"]);
}

#[test]
fn no_pings_for_another_process() {
    // pid 1 is never the server.
    let states = states_of_a_run(
        "watchdog-other",
        &[("WATCHDOG_USEC", "20000"), ("WATCHDOG_PID", "1")],
    );
    assert_eq!(states, ["STOPPING=1"]);
}

#[test]
fn a_bad_watchdog_usec_is_one_warning() {
    let dir = TempDir::new("watchdog-bad");
    let path = dir.path("s.sock");
    let notify_path = dir.path("notify");
    let _notify = notify_socket(&notify_path);
    let mut cmd = Command::new(bin());
    cmd.arg(&path)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "soon")
        .env_remove("WATCHDOG_PID");
    let mut server = Proc::spawn_cmd(&mut cmd);
    let line = server.wait_for("WATCHDOG_USEC");
    assert!(line.contains("[WARN]") && line.contains("'soon'"), "{line}");
    server.wait_for("listening on");
    echo(&path);
    assert!(server.stop().success());
}
