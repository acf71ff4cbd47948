//! The socket file goes away on every way out, not only after `run`: a
//! library `Server` dropped without running removes it, and the binary
//! removes it when a step after `bind` fails (creating the poller or the
//! waker, registering, installing the signal handlers), here forced by a
//! tiny open-file limit.

mod common;

use std::process::Command;

use common::{bin, exists, Proc, TempDir};
use uds_reactor::{Config, Server};

#[test]
fn a_server_dropped_without_running_removes_its_file() {
    let dir = TempDir::new("drop-unrun");
    let path = dir.path("s.sock");
    let server = Server::bind(Config::new(&path)).expect("bind");
    assert!(exists(&path), "bind creates the socket file");
    drop(server);
    assert!(
        !exists(&path),
        "a Server dropped without run() left its socket file {} behind",
        path.display()
    );
}

/// The server under a hard (and soft) open-file limit of `n`.
fn limited(n: u32, path: &str) -> Command {
    let mut cmd = if Command::new("prlimit").arg("--version").output().is_ok() {
        let mut c = Command::new("prlimit");
        c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin());
        c
    } else {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
            .arg(bin());
        c
    };
    cmd.arg(path);
    cmd
}

#[test]
fn errors_after_bind_leave_no_socket_file() {
    let dir = TempDir::new("fd-starved");
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for n in 4..=24u32 {
        let path = dir.path(&format!("n{n}.sock"));
        let mut p = Proc::spawn_cmd(&mut limited(n, path.to_str().unwrap()));
        match p.wait_for_or_exit("listening on") {
            Ok(_) => {
                let status = p.stop();
                assert_eq!(status.code(), Some(0), "limit {n}:\n{}", p.log_text());
                assert!(!exists(&path), "limit {n}: file left after SIGTERM");
                outcomes.push(format!("{n}: served"));
            }
            Err(status) => {
                let log = p.log_at_exit();
                assert_eq!(
                    status.code(),
                    Some(1),
                    "limit {n}: a runtime error exits 1:\n{log}"
                );
                assert!(!log.contains("panicked"), "limit {n}:\n{log}");
                let error = log.lines().last().unwrap_or("").to_string();
                if exists(&path) {
                    failures.push(format!("limit {n}: {error}"));
                }
                outcomes.push(format!("{n}: exit 1 ({error})"));
            }
        }
    }
    println!("{}", outcomes.join("\n"));
    assert!(
        failures.is_empty(),
        "the socket file was left behind after a failed start:\n{}",
        failures.join("\n")
    );
    assert!(
        outcomes.iter().any(|o| o.contains("served")),
        "no limit up to 24 let the server start:\n{}",
        outcomes.join("\n")
    );
}
