//! Under socket activation, a descriptor of the wrong socket type is
//! refused with a message naming both what it is and what was expected: a
//! seqpacket listener handed to `--type stream` must not be described as
//! merely "not a Unix stream socket" (an operator cannot tell a seqpacket
//! socket from a regular file by that).
//!
//! systemd is played as in `tests/activation.rs`: `bash -c` moves the
//! socket to descriptor 3, sets `LISTEN_PID=$$` and execs the server.

mod common;

use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

use common::{bin, TempDir};
use socket2::{Domain, SockAddr, Socket, Type};

/// Runs the server with `socket` as descriptor 3 and the activation
/// variables naming the server's own pid, to completion.
fn run_activated(socket: &Socket, args: &[&str]) -> Output {
    let fd = socket.as_raw_fd();
    let moves = if fd == 3 {
        String::new()
    } else {
        format!("exec 3<&{fd} {fd}<&-; ")
    };
    let script = format!(r#"{moves}export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@""#);
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(script)
        .arg(bin())
        .args(args)
        .stdin(Stdio::null());
    // The only test in this binary: no other child can inherit the
    // descriptor while it is inheritable.
    socket.set_cloexec(false).unwrap();
    let out = cmd.output().expect("run bash");
    socket.set_cloexec(true).unwrap();
    out
}

#[test]
fn seqpacket_listener_for_a_stream_server_names_both_types() {
    let dir = TempDir::new("wrongtype-sp");
    let path = dir.path("sp.sock");
    let socket = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).unwrap();
    socket.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    socket.listen(16).unwrap();
    let out = run_activated(&socket, &["--type", "stream"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        stderr.contains("descriptor 3"),
        "names the descriptor: {stderr}"
    );
    assert!(
        stderr.contains("seqpacket") && stderr.contains("stream"),
        "the error must say the descriptor is a seqpacket socket and a stream one was expected: {stderr}"
    );
}
