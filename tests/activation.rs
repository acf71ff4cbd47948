//! systemd integration against the real binary: socket activation (a
//! listener inherited as descriptor 3 with `LISTEN_PID`/`LISTEN_FDS`) and
//! readiness notification (`READY=1`, `STOPPING=1` on `NOTIFY_SOCKET`).
//!
//! The tests play systemd: they create the socket, leave it open across
//! `exec` (socket2's safe `set_cloexec(false)`), and start the server via
//! `bash -c`, which moves it to descriptor 3 and sets `LISTEN_PID=$$`,
//! its own pid, which `exec` hands to the server.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use common::{bin, exists, Proc, TempDir, PATIENCE};
use socket2::{Domain, SockAddr, Socket, Type};

/// Held while a descriptor is inheritable, so no other test's child
/// inherits it by accident.
static SPAWN: Mutex<()> = Mutex::new(());

/// A command running the server with `socket` as descriptor 3 and the
/// activation variables naming the server's own pid.
fn activated(socket: &Socket, args: &[&str]) -> Command {
    let fd = socket.as_raw_fd();
    let moves = if fd == 3 {
        String::new()
    } else {
        format!("exec 3<&{fd} {fd}<&-; ")
    };
    let script = format!(r#"{moves}export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@""#);
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script).arg(bin()).args(args);
    cmd
}

/// Runs `f` (which spawns) while `socket` is inheritable.
fn with_inheritable<T>(socket: &Socket, f: impl FnOnce() -> T) -> T {
    let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    socket.set_cloexec(false).unwrap();
    let out = f();
    socket.set_cloexec(true).unwrap();
    out
}

/// A listening stream socket at `path`, as systemd would make it.
fn listener(path: &Path) -> Socket {
    let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).unwrap();
    s.bind(&SockAddr::unix(path).unwrap()).unwrap();
    s.listen(128).unwrap();
    s
}

/// A notification socket at `addr`, with a receive timeout.
fn notify_socket(addr: &SocketAddr) -> UnixDatagram {
    let s = UnixDatagram::bind_addr(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

fn recv_state(s: &UnixDatagram) -> String {
    let mut buf = [0; 256];
    let n = s.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn echo(path: &Path, msg: &[u8]) {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, msg);
}

/// Runs an activated server to completion and returns its output.
fn run_activated(socket: &Socket, args: &[&str]) -> Output {
    let mut cmd = activated(socket, args);
    cmd.stdin(Stdio::null());
    with_inheritable(socket, || cmd.output().expect("run bash"))
}

#[test]
fn serves_an_inherited_listener_and_leaves_it() {
    let dir = TempDir::new("activate");
    let path = dir.path("s.sock");
    let name = format!("udsr-notify-{}", std::process::id());
    let notify = notify_socket(&SocketAddr::from_abstract_name(&name).unwrap());

    let socket = listener(&path);
    let mut cmd = activated(&socket, &["--framing", "line"]);
    cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    let mut server = with_inheritable(&socket, || Proc::spawn_cmd(&mut cmd));
    drop(socket); // the server holds the only copy now
    assert_eq!(recv_state(&notify), "READY=1");
    let line = server.wait_for("listening on");
    // SPEC: "listening on <PATH>": the path systemd bound, read back.
    let expected = format!(
        "listening on {} (stream, line), descriptor 3 from systemd",
        path.display()
    );
    assert!(line.contains(&expected), "{line}");

    echo(&path, b"through systemd's socket\n");
    echo(&path, b"and again\n");

    server.signal(15);
    assert_eq!(recv_state(&notify), "STOPPING=1");
    assert!(server.wait_exit().success());
    assert!(exists(&path), "an inherited socket's file must stay");
    // Nobody listens any more: the descriptor went with the server.
    let err = UnixStream::connect(&path).expect_err("connect after exit");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn notifies_ready_once_listening_and_stopping_at_shutdown() {
    let dir = TempDir::new("notify");
    let path = dir.path("s.sock");
    let notify_path = dir.path("notify");
    let notify = notify_socket(&SocketAddr::from_pathname(&notify_path).unwrap());

    let mut cmd = Command::new(bin());
    cmd.arg(&path).env("NOTIFY_SOCKET", &notify_path);
    let mut server = Proc::spawn_cmd(&mut cmd);
    assert_eq!(recv_state(&notify), "READY=1");
    // READY=1 means listening: a client can connect at once.
    echo(&path, b"ready means ready");

    server.signal(15);
    assert_eq!(recv_state(&notify), "STOPPING=1");
    assert!(server.wait_exit().success());
    assert!(!exists(&path), "a socket file it created is removed");
}

/// Activation variables for another process (a parent's, inherited by
/// mistake) are ignored: the server binds PATH as usual.
#[test]
fn foreign_listen_pid_is_ignored() {
    let dir = TempDir::new("foreign");
    let path = dir.path("s.sock");
    let mut cmd = Command::new(bin());
    cmd.arg(&path).env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
    let mut server = Proc::spawn_cmd(&mut cmd);
    let line = server.wait_for("listening on");
    assert!(line.contains(path.to_str().unwrap()), "{line}");
    echo(&path, b"bound, not inherited");
    assert!(server.stop().success());
}

/// Checks an activation failure: exit status 1 and a single stderr line
/// containing `needle`.
fn assert_fails(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "stderr: {stderr}");
    assert!(stderr.contains(needle), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn datagram_socket_for_a_stream_server_is_refused() {
    let dir = TempDir::new("wrongtype");
    let path = dir.path("d.sock");
    let socket = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None).unwrap();
    socket.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    let out = run_activated(&socket, &["--type", "stream"]);
    assert_fails(
        &out,
        "descriptor 3 is a Unix dgram socket; --type stream expects a Unix stream socket",
    );
}

#[test]
fn stream_listener_for_a_seqpacket_server_is_refused() {
    let dir = TempDir::new("wrongtype2");
    let socket = listener(&dir.path("s.sock"));
    let out = run_activated(&socket, &["--type", "seqpacket"]);
    assert_fails(
        &out,
        "descriptor 3 is a Unix stream socket; --type seqpacket expects a Unix seqpacket socket",
    );
}

/// `Accept=yes` passes a connection, not a listener: refused.
#[test]
fn connected_socket_is_refused() {
    let (a, _b) = Socket::pair(Domain::UNIX, Type::STREAM.cloexec(), None).unwrap();
    let out = run_activated(&a, &[]);
    assert_fails(&out, "not a listener");
}

/// The error names what descriptor 3 is as well as what was expected
/// (it used to say only "not a Unix stream socket").
#[test]
fn seqpacket_listener_for_a_stream_server_names_both_types() {
    let dir = TempDir::new("wrongtype-sp");
    let path = dir.path("sp.sock");
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).unwrap();
    socket.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    socket.listen(16).unwrap();
    let out = run_activated(&socket, &["--type", "stream"]);
    assert_fails(
        &out,
        "descriptor 3 is a Unix seqpacket socket; --type stream expects a Unix stream socket",
    );
}
