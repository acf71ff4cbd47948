//! An embedded server (systemd support off, the library's default) sends
//! nothing to `NOTIFY_SOCKET`, not even `STOPPING=1` at shutdown:
//! notifications are the binary's choice, never a side effect of the
//! library (SPEC "Library").
//!
//! The variable must be in the server's environment, and setting it in
//! this multi-threaded test process is unsound, so the test runs this
//! test binary again as a child with `NOTIFY_SOCKET` set, where the ignored
//! test [`child_runs_an_embedded_echo_server`] does the serving.

mod common;

use common::exit_within;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use uds_reactor::{Config, Server};

const PATIENCE: Duration = Duration::from_secs(20);
/// Set (to a fresh directory) only in the child run.
const CHILD_DIR: &str = "UDSR_EMBEDDED_NOTIFY_DIR";

#[test]
fn an_embedded_server_sends_no_notifications() {
    let dir = std::env::temp_dir().join(format!("udsr-embnotify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_nonblocking(true).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_runs_an_embedded_echo_server",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        // Nor watchdog pings, even when systemd asks the process for them.
        .env("WATCHDOG_USEC", "2000")
        .env_remove("WATCHDOG_PID")
        .env(CHILD_DIR, &dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the child test");
    let status = exit_within(&mut child, "the child test");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "child test failed:\n{out}");
    assert!(
        out.contains("1 passed"),
        "the child test did not run:\n{out}"
    );

    // The child has exited: anything it sent is queued by now.
    let mut buf = [0; 256];
    match notify.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(n) => panic!(
            "an embedded server (Config::systemd false) sent {:?} to NOTIFY_SOCKET",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("recv on the notify socket: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run only as the child of the test above (does nothing elsewhere): an
/// embedded echo server with the default config, one echo, stopped
/// through its handle.
#[test]
#[ignore = "run by an_embedded_server_sends_no_notifications"]
fn child_runs_an_embedded_echo_server() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return;
    };
    let path = dir.join("s.sock");
    let server = Server::bind(Config::new(&path)).expect("bind");
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    let mut s = UnixStream::connect(&path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"ping");
    drop(s);
    handle.stop();
    let stats = thread.join().expect("server thread").expect("run");
    assert_eq!(stats.bytes_in, 4);
}
