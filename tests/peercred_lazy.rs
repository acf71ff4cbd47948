//! Without `--allow-uid`/`--allow-gid` the server has no use for a peer's
//! credentials on the way in, so accepting a connection makes no
//! `SO_PEERCRED` `getsockopt` (one syscall per accept, saved). Checked by
//! running the binary under `strace`; skipped, with a note, where strace
//! is missing or tracing is not permitted.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{bin, Proc, TempDir, PATIENCE};

const CONNECTIONS: usize = 20;

/// Whether `strace` runs and may trace here.
fn strace_works() -> Result<(), String> {
    match Command::new("strace")
        .args(["-f", "-e", "trace=getsockopt", "-o", "/dev/null", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "strace cannot trace here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("no strace: {e}")),
    }
}

/// The pid of the one child of `pid` (the server strace started).
fn only_child(pid: i32) -> i32 {
    let file = format!("/proc/{pid}/task/{pid}/children");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let kids: Vec<i32> = text
        .split_whitespace()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(kids.len(), 1, "children of strace: {kids:?}");
    kids[0]
}

/// Kills the server (started by this test, under strace) if the test ends
/// before it exited.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

fn echo(path: &Path, i: usize) {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let msg = format!("hello {i}");
    s.write_all(msg.as_bytes()).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, msg.as_bytes());
}

#[test]
fn accepting_without_credential_checks_asks_for_no_credentials() {
    if let Err(why) = strace_works() {
        println!("skipped: {why}");
        return;
    }
    let dir = TempDir::new("peercred");
    let path = dir.path("s.sock");
    let trace = dir.path("trace");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-e", "trace=getsockopt", "-o"])
        .arg(&trace)
        .arg("--")
        .arg(bin())
        .arg(&path);
    let mut p = Proc::spawn_cmd(&mut cmd);
    p.wait_for("listening on");
    let server = only_child(p.pid());
    // If the test fails half way, the server must not outlive it: killing
    // strace only detaches strace from it.
    let mut guard = KillOnDrop(Some(server));

    for i in 0..CONNECTIONS {
        echo(&path, i);
    }
    // The server's counters prove every connection went through accept.
    let deadline = Instant::now() + PATIENCE;
    let mut line = String::new();
    for _ in 0..10_000 {
        line = p.stats_of(server);
        if common::stat(&line, "closed") == CONNECTIONS as u64 {
            break;
        }
        assert!(Instant::now() < deadline, "{line}");
    }
    assert_eq!(
        common::stat(&line, "accepted"),
        CONNECTIONS as u64,
        "{line}"
    );

    // SIGTERM to the server itself (strace would only detach from it).
    common::signal(server, 15);
    let status = p.wait_exit();
    guard.0 = None; // strace exits only after the server did
    assert!(status.success(), "{}", p.log_text());

    let text = std::fs::read_to_string(&trace).expect("strace output");
    let peercred: Vec<&str> = text.lines().filter(|l| l.contains("SO_PEERCRED")).collect();
    assert!(
        peercred.is_empty(),
        "{} SO_PEERCRED getsockopt calls for {CONNECTIONS} connections without \
         --allow-uid/--allow-gid, e.g.:\n{}",
        peercred.len(),
        peercred
            .iter()
            .take(3)
            .copied()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
