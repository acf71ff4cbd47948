//! The SIGUSR2 binary upgrade (SPEC "Zero-downtime upgrade") against the
//! real binary: under continuous load nothing is refused or lost across
//! two upgrades in a row, the old process exits 0, the socket file keeps
//! its inode and the new process removes it; a broken new binary (exits,
//! hangs) is one error line and the old one serves on; seqpacket, dgram,
//! `@name`, a socket-activated server, and `NOTIFY_SOCKET`.
//!
//! Each test runs its own link (or copy) of the binary from a temporary
//! directory, so it can put a broken "new build" at that path by rename,
//! as an install would: the upgrade runs whatever is at the path the
//! server was started by.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{bin, connect, exists, open_fds, signal, Proc, TempDir, PATIENCE};
use socket2::{Domain, SockAddr, Socket, Type};

const SIGUSR2: i32 = 12;
const SIGTERM: i32 = 15;

/// Held while a descriptor is inheritable (the socket-activation test),
/// and by every spawn here, so no other child inherits it by accident.
static SPAWN: Mutex<()> = Mutex::new(());

/// Starts a prepared server command (see [`SPAWN`]).
fn spawn(cmd: &mut Command) -> Proc {
    let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    Proc::spawn_cmd(cmd)
}

/// The binary at a path of the test's own (a hard link, or a copy across
/// file systems), which the test may replace.
fn own_binary(dir: &TempDir) -> PathBuf {
    let path = dir.path("uds-reactor");
    if std::fs::hard_link(bin(), &path).is_err() {
        std::fs::copy(bin(), &path).expect("copy the binary");
    }
    path
}

/// Installs `script` at `path` by rename, as a new build would be.
fn install_script(path: &Path, script: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, script).expect("write script");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename");
}

/// The processes an upgrade started for this test (not our children):
/// killed at the end if still running, by pid, only if they still are
/// this binary.
#[derive(Default)]
struct Started(Vec<i32>);

impl Drop for Started {
    fn drop(&mut self) {
        for &pid in &self.0 {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("uds-reactor") {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// Whether `pid` is gone (or a zombie waiting for its new parent).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
    }
}

fn wait_gone(pid: i32) {
    let deadline = Instant::now() + PATIENCE;
    while !gone(pid) {
        assert!(Instant::now() < deadline, "process {pid} did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGUSR2 to `pid` and waits for the new process to listen and the
/// old one to hand over; returns the new pid.
fn upgrade(server: &mut Proc, pid: i32, started: &mut Started) -> i32 {
    signal(pid, SIGUSR2);
    let line = server.wait_for("upgrade: started");
    let new: i32 = line
        .rsplit("as process ")
        .next()
        .and_then(|rest| rest.split(';').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    started.0.push(new);
    server.wait_for(&format!("upgrade: process {new} listens on"));
    new
}

/// [`upgrade`] of the server the test started itself.
fn upgrade_first(server: &mut Proc, started: &mut Started) -> i32 {
    let pid = server.pid();
    upgrade(server, pid, started)
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).expect("socket file").ino()
}

fn echo(path: &Path, msg: &[u8]) {
    let mut s = connect(path);
    s.write_all(msg).unwrap();
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, msg);
}

/// `uds-reactor load --json ARGS`, started.
fn start_load(args: &[&str]) -> std::process::Child {
    let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(bin())
        .arg("load")
        .arg("--json")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load")
}

fn finish_load(load: std::process::Child) -> Output {
    let deadline = Instant::now() + PATIENCE;
    let pid = load.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(load.wait_with_output());
    });
    match rx.recv_timeout(deadline - Instant::now()) {
        Ok(out) => out.expect("wait for load"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("load did not finish");
        }
    }
}

/// Two upgrades in a row under `load` (long-lived connections, or churn):
/// the load sees no error at all, the first server exits 0, the file keeps
/// its inode, and the last server removes it on SIGTERM.
fn two_upgrades_under_load(tag: &str, load_args: &[&str]) {
    let dir = TempDir::new(tag);
    let exe = own_binary(&dir);
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let mut started = Started::default();
    let mut server = spawn(Command::new(&exe).args([p, "--drain-timeout", "15"]));
    server.wait_for("listening on");
    let ino = inode(&path);

    let mut args = vec!["-d", "3", "-c", "8"];
    args.extend_from_slice(load_args);
    args.push(p);
    let load = start_load(&args);
    // Upgrade only once the load is connected and running.
    let deadline = Instant::now() + PATIENCE;
    while server.counter("frames_in") < 100 {
        assert!(Instant::now() < deadline, "no load reached the server");
    }
    let second = upgrade_first(&mut server, &mut started);
    assert_eq!(inode(&path), ino, "the file is the same across the upgrade");
    let third = upgrade(&mut server, second, &mut started);
    assert_eq!(inode(&path), ino);

    let out = finish_load(load);
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "load failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log_text()
    );
    assert!(json.contains("\"errors\":0"), "{json}");
    // The first server goes as soon as its last connection is gone.
    let status = server.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    wait_gone(second);
    assert!(
        exists(&path) && inode(&path) == ino,
        "the file is the new server's"
    );
    echo(&path, b"served by the third");

    signal(third, SIGTERM);
    wait_gone(third);
    assert!(
        !exists(&path),
        "the new server removes the file it took over"
    );
    let log = server.log_text();
    assert!(!log.contains("STOPPING"), "{log}");
    assert!(!log.contains("[ERROR]"), "{log}");
}

#[test]
fn two_upgrades_under_long_lived_load_lose_nothing() {
    two_upgrades_under_load("up-load", &[]);
}

#[test]
fn two_upgrades_under_churn_refuse_nothing() {
    two_upgrades_under_load("up-churn", &["--churn"]);
}

/// A new binary that exits at once, then one that hangs without
/// listening: one error line each, the old server serves on throughout
/// and keeps its file; a SIGUSR2 during the attempt is ignored.
#[test]
fn a_broken_new_binary_is_one_error_line_and_the_old_serves_on() {
    let dir = TempDir::new("up-broken");
    let exe = own_binary(&dir);
    let path = dir.path("s.sock");
    let mut server = spawn(Command::new(&exe).arg(&path));
    server.wait_for("listening on");
    let ino = inode(&path);
    let mut open = connect(&path);
    open.write_all(b"first").unwrap();
    let mut got = [0; 5];
    open.read_exact(&mut got).unwrap();
    // Accepted and served: what the server holds with one connection.
    let fds = open_fds(server.pid());

    install_script(&exe, "#!/bin/sh\necho 'broken build' >&2\nexit 3\n");
    server.signal(SIGUSR2);
    let line = server.wait_for("[ERROR]");
    assert!(
        line.contains("exited before listening (exit status: 3); still serving"),
        "{line}"
    );
    echo(&path, b"still here");

    // `exec`: the pid started is the one that hangs (and is killed).
    install_script(&exe, "#!/bin/sh\nexec sleep 60\n");
    server.signal(SIGUSR2);
    let line = server.wait_for("upgrade: started");
    let pid: i32 = line
        .rsplit("as process ")
        .next()
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .expect("pid");
    let mut started = Started(vec![pid]);
    server.signal(SIGUSR2);
    server.wait_for("SIGUSR2 ignored: an upgrade is in progress");
    echo(&path, b"served while the new one hangs");
    let line = server.wait_for("[ERROR]");
    assert!(
        line.contains("was not listening within 10s; killed it; still serving"),
        "{line}"
    );
    assert!(gone(pid), "the hanging process was killed");
    started.0.clear();

    open.write_all(b"old connection").unwrap();
    let mut got = [0; 14];
    open.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"old connection");
    assert_eq!(inode(&path), ino);
    assert_eq!(
        open_fds(server.pid()),
        fds,
        "failed upgrades leave no descriptor behind"
    );
    let errors = server.log_text().matches("[ERROR]").count();
    assert_eq!(errors, 2, "{}", server.log_text());
    assert!(server.stop().success());
    assert!(!exists(&path), "still its file: removed at its shutdown");
}

/// seqpacket: a connection open before the handover is still served by the
/// old process; a new one goes to the new process; the old exits 0 once
/// its connection closes.
#[test]
fn seqpacket_upgrade_keeps_old_connections_served() {
    let dir = TempDir::new("up-seq");
    let exe = own_binary(&dir);
    let path = dir.path("sp.sock");
    let mut started = Started::default();
    let mut server = spawn(Command::new(&exe).arg(&path).args(["--type", "seqpacket"]));
    server.wait_for("listening on");
    let addr = SockAddr::unix(&path).unwrap();
    let old = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    old.connect(&addr).unwrap();
    old.set_read_timeout(Some(PATIENCE)).unwrap();
    let exchange = |s: &Socket, msg: &[u8]| {
        s.send(msg).unwrap();
        let mut buf = [0; 64];
        // One read, one message on seqpacket.
        let n = (&*s).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg);
    };
    exchange(&old, b"before");

    let new = upgrade_first(&mut server, &mut started);
    exchange(&old, b"after, on the old process");
    let fresh = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    fresh.connect(&addr).unwrap();
    fresh.set_read_timeout(Some(PATIENCE)).unwrap();
    exchange(&fresh, b"on the new process");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "one connection left"
    );
    drop(old);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    exchange(&fresh, b"the new one carries on");
    signal(new, SIGTERM);
    wait_gone(new);
    assert!(!exists(&path));
}

/// dgram: replies keep coming across the upgrade (the new process reads
/// the shared socket), and the old one, with nothing queued, exits 0 at
/// once.
#[test]
fn dgram_upgrade_hands_the_socket_over() {
    let dir = TempDir::new("up-dgram");
    let exe = own_binary(&dir);
    let path = dir.path("d.sock");
    let mut started = Started::default();
    let mut server = spawn(Command::new(&exe).arg(&path).args(["--type", "dgram"]));
    server.wait_for("listening on");
    let me = UnixDatagram::bind(dir.path("client.sock")).unwrap();
    me.set_read_timeout(Some(PATIENCE)).unwrap();
    me.connect(&path).unwrap();
    let exchange = |msg: &[u8]| {
        me.send(msg).unwrap();
        let mut buf = [0; 64];
        let n = me.recv(&mut buf).expect("reply");
        assert_eq!(&buf[..n], msg);
    };
    exchange(b"before");
    let ino = inode(&path);
    let new = upgrade_first(&mut server, &mut started);
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    exchange(b"after");
    assert_eq!(inode(&path), ino);
    signal(new, SIGTERM);
    wait_gone(new);
    assert!(!exists(&path));
}

/// An abstract address: no file anywhere, the same name served throughout.
#[test]
fn abstract_address_upgrade() {
    let dir = TempDir::new("up-abstract");
    let exe = own_binary(&dir);
    let name = format!("udsr-upgrade-{}", std::process::id());
    let at = format!("@{name}");
    let mut started = Started::default();
    let mut server = spawn(Command::new(&exe).arg(&at));
    server.wait_for("listening on");
    let addr = SocketAddr::from_abstract_name(&name).unwrap();
    let talk = |msg: &[u8]| {
        let mut s = UnixStream::connect_addr(&addr).expect("connect");
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        s.write_all(msg).unwrap();
        let mut got = vec![0; msg.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, msg);
    };
    talk(b"old");
    let new = upgrade_first(&mut server, &mut started);
    assert_eq!(server.wait_exit().code(), Some(0));
    talk(b"new");
    signal(new, SIGTERM);
    wait_gone(new);
    let err = UnixStream::connect_addr(&addr).expect_err("nobody listens");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

fn recv_state(s: &UnixDatagram) -> String {
    let mut buf = [0; 256];
    let n = s.recv(&mut buf).expect("a notification");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Under `NOTIFY_SOCKET`: the new process says `MAINPID=` (its own pid)
/// and `READY=1`; the old one never says `STOPPING=1`. The metrics socket
/// goes over too, file and all.
#[test]
fn notify_socket_gets_mainpid_and_ready_from_the_new_process() {
    let dir = TempDir::new("up-notify");
    let exe = own_binary(&dir);
    let path = dir.path("s.sock");
    let metrics = dir.path("m.sock");
    let notify_path = dir.path("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut started = Started::default();
    let mut cmd = Command::new(&exe);
    cmd.arg(&path)
        .arg("--metrics")
        .arg(&metrics)
        .env("NOTIFY_SOCKET", &notify_path);
    let mut server = spawn(&mut cmd);
    assert_eq!(recv_state(&notify), "READY=1");
    let metrics_ino = inode(&metrics);

    let new = upgrade_first(&mut server, &mut started);
    assert_eq!(recv_state(&notify), format!("MAINPID={new}\nREADY=1"));
    assert_eq!(server.wait_exit().code(), Some(0));
    notify.set_nonblocking(true).unwrap();
    let mut buf = [0; 256];
    let left = notify
        .recv(&mut buf)
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
    assert!(
        matches!(&left, Err(e) if e.kind() == ErrorKind::WouldBlock),
        "the old process said {left:?}"
    );
    notify.set_nonblocking(false).unwrap();

    assert_eq!(inode(&metrics), metrics_ino);
    let mut scrape = connect(&metrics);
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    scrape.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("uds_reactor_open_connections"),
        "{response}"
    );

    signal(new, SIGTERM);
    assert_eq!(recv_state(&notify), "STOPPING=1");
    wait_gone(new);
    assert!(
        !exists(&path) && !exists(&metrics),
        "the new process removes both"
    );
}

/// A socket-activated server upgrades the same way; the file stays
/// systemd's (never removed by either process).
#[test]
fn socket_activated_server_upgrades() {
    let dir = TempDir::new("up-activated");
    let exe = own_binary(&dir);
    let path = dir.path("s.sock");
    let listener = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).unwrap();
    listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(128).unwrap();
    let fd = listener.as_raw_fd();
    // Moved to 3 unless it is 3 already (then `3<&3 3<&-` would close it:
    // a failure seen in CI whenever the listener happened to get 3).
    let moves = match fd {
        3 => String::new(),
        _ => format!("exec 3<&{fd} {fd}<&-; "),
    };
    let script = format!(r#"{moves}export LISTEN_PID=$$ LISTEN_FDS=1; exec "$0" "$@""#);
    let mut cmd = Command::new("bash");
    cmd.arg("-c").arg(script).arg(&exe);
    let mut server = {
        let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        listener.set_cloexec(false).unwrap();
        let server = Proc::spawn_cmd(&mut cmd);
        listener.set_cloexec(true).unwrap();
        server
    };
    drop(listener);
    server.wait_for("descriptor 3 from systemd");
    let mut started = Started::default();
    echo(&path, b"activated");
    let new = upgrade_first(&mut server, &mut started);
    assert_eq!(server.wait_exit().code(), Some(0));
    echo(&path, b"upgraded");
    signal(new, SIGTERM);
    wait_gone(new);
    assert!(exists(&path), "systemd's file stays");
}

/// SIGTERM while the new process has not said it listens: it is killed
/// (it has accepted nothing), and the old one stops as usual, removing its
/// file.
#[test]
fn sigterm_during_an_upgrade_kills_the_new_process_and_stops() {
    let dir = TempDir::new("up-term");
    let exe = own_binary(&dir);
    let path = dir.path("s.sock");
    let mut server = spawn(Command::new(&exe).arg(&path));
    server.wait_for("listening on");
    install_script(&exe, "#!/bin/sh\nexec sleep 60\n");
    server.signal(SIGUSR2);
    let line = server.wait_for("upgrade: started");
    let pid: i32 = line
        .rsplit("as process ")
        .next()
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.parse().ok())
        .expect("pid");
    let _started = Started(vec![pid]);
    server.signal(SIGTERM);
    server.wait_for("upgrade abandoned");
    assert_eq!(server.wait_exit().code(), Some(0), "{}", server.log_text());
    assert!(gone(pid), "the new process was killed");
    assert!(!exists(&path), "the file was still ours: removed");
}
