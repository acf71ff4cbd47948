//! The syscalls against real sockets in a temporary directory.

use std::fs;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, Socket, Type};

use super::*;
use crate::config::{Address, Config, Group, SocketType};
use crate::error::Error;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("uds-sys-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn config(path: &Path, ty: SocketType) -> Config {
    let mut config = Config::new(path);
    config.socket_type = ty;
    config
}

fn file_id(path: &Path) -> io::Result<FileId> {
    let meta = fs::symlink_metadata(path)?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

fn ids() -> (i32, u32, u32) {
    // SAFETY: these calls only read the process's own ids.
    unsafe { (libc::getpid(), libc::geteuid(), libc::getegid()) }
}

/// The mode and group are exact under any umask, and the file is never
/// wider than the mode. The umask is process state: this runs in a child
/// process of its own (the test binary re-run for this test alone).
#[test]
fn mode_is_exact_whatever_the_umask() {
    if let Some(umask) = std::env::var_os("UDS_SYS_UMASK_CHILD") {
        let umask = u32::from_str_radix(&umask.to_string_lossy(), 8).expect("octal");
        return umask_child(umask);
    }
    for umask in ["077", "000"] {
        let out = rerun("mode_is_exact_whatever_the_umask")
            .env("UDS_SYS_UMASK_CHILD", umask)
            .output()
            .expect("spawn");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "umask {umask}: {stdout}");
        assert!(stdout.contains("1 passed"), "child ran no test: {stdout}");
    }
}

fn umask_child(umask: u32) {
    // SAFETY: umask only swaps the file-creation mask of this process,
    // which runs this one test and nothing else.
    unsafe { libc::umask(umask as libc::mode_t) };
    let dir = TempDir::new();
    let path = dir.join("m.sock");
    let mut config = config(&path, SocketType::Stream);
    config.mode = 0o640;
    // Our own egid needs no privilege to chown to.
    let (_, _, gid) = ids();
    config.group = Some(Group::Id(gid));
    let bound = bind(&config).expect("bind");
    let meta = fs::symlink_metadata(&path).expect("stat");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "umask {umask:o}");
    assert_eq!(meta.gid(), gid);
    let file = bound.file.as_ref().expect("a file of ours");
    assert_eq!(file.id(), file_id(&path).expect("stat"));
    assert!(bound.socket.nonblocking().expect("flags"));
    UnixStream::connect(&path).expect("connect");
    drop(bound);
    assert!(!path.exists(), "the guard removes the file");
}

/// Leaves a stale socket file at `path`: bound, never listening, so a
/// connect is refused even while a child forked by another test still
/// holds a copy of the descriptor (a listener's copy would answer).
fn stale_socket(path: &Path) {
    let socket = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None).expect("socket");
    socket
        .bind(&socket2::SockAddr::unix(path).expect("addr"))
        .expect("stale");
}

/// This test binary, set to run only `test` (a name in this module).
fn rerun(test: &str) -> Command {
    let name = module_path!()
        .split_once("::")
        .map_or("", |(_, m)| m)
        .to_owned()
        + "::"
        + test;
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args(["--exact", &name, "--test-threads=1"]);
    cmd
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new();
    let path = dir.join("stale.sock");
    drop(UnixListener::bind(&path).expect("listener"));
    let _bound = bind(&config(&path, SocketType::Stream)).expect("bind over stale");
    UnixStream::connect(&path).expect("connect");

    let dgram = dir.join("stale-dgram.sock");
    drop(UnixDatagram::bind(&dgram).expect("dgram"));
    bind(&config(&dgram, SocketType::Dgram)).expect("bind over stale dgram");
}

#[test]
fn live_socket_is_refused_and_kept() {
    let dir = TempDir::new();
    let mut live = Vec::new();
    for ty in [SocketType::Stream, SocketType::Seqpacket, SocketType::Dgram] {
        let path = dir.join(&format!("{ty}.sock"));
        let first = bind(&config(&path, ty)).expect("first bind");
        let err = bind(&config(&path, ty)).expect_err("second bind");
        assert!(matches!(err, Error::InUse(_)), "{ty}: {err}");
        assert_eq!(first.file.as_ref().map(SocketFile::id), file_id(&path).ok());
        live.push(first);
    }
    // A live socket of another type is in use too.
    let path = dir.join("stream.sock");
    let err = bind(&config(&path, SocketType::Dgram)).expect_err("other type");
    assert!(matches!(err, Error::InUse(_)), "{err}");
}

#[test]
fn non_socket_is_refused_and_untouched() {
    let dir = TempDir::new();
    let file = dir.join("file");
    fs::write(&file, b"keep me").expect("write");
    let err = bind(&config(&file, SocketType::Stream)).expect_err("file");
    assert!(matches!(err, Error::NotSocket(_)), "{err}");
    assert_eq!(fs::read(&file).expect("read"), b"keep me");

    let live = dir.join("live.sock");
    let _listener = UnixListener::bind(&live).expect("listener");
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&live, &link).expect("symlink");
    let err = bind(&config(&link, SocketType::Stream)).expect_err("symlink");
    assert!(matches!(err, Error::NotSocket(_)), "{err}");
    assert!(fs::symlink_metadata(&link)
        .expect("lstat")
        .file_type()
        .is_symlink());
}

#[test]
fn bad_paths_are_named() {
    let dir = TempDir::new();
    let long = dir.join(&"x".repeat(120));
    assert!(matches!(
        bind(&config(&long, SocketType::Stream)),
        Err(Error::PathTooLong(_))
    ));
    let orphan = dir.join("missing/s.sock");
    assert!(matches!(
        bind(&config(&orphan, SocketType::Stream)),
        Err(Error::NoParent(_))
    ));
    assert!(matches!(bind(&Config::default()), Err(Error::Config(_))));
    let name = Address::Abstract(vec![b'a'; 108]);
    assert!(matches!(name.to_sock_addr(), Err(Error::PathTooLong(_))));
}

#[test]
fn removal_leaves_a_newer_socket_alone() {
    let dir = TempDir::new();
    let path = dir.join("r.sock");
    let old = bind(&config(&path, SocketType::Stream))
        .expect("bind")
        .file
        .expect("file");
    // Moved, not unlinked: the old inode stays allocated, so the new
    // socket cannot reuse its number.
    fs::rename(&path, dir.join("moved.sock")).expect("rename");
    fs::rename(dir.join("moved.sock"), dir.join("moved2.sock")).expect("rename");
    let new = bind(&config(&path, SocketType::Stream))
        .expect("rebind")
        .file
        .expect("file");
    assert_ne!(old.id(), new.id());
    drop(old);
    assert!(path.exists(), "the old guard leaves the newer socket alone");
    drop(new);
    assert!(!path.exists(), "the new guard removes its own");
}

#[test]
fn a_failed_bind_leaves_no_file() {
    let dir = TempDir::new();
    let path = dir.join("g.sock");
    let mut config = config(&path, SocketType::Stream);
    // A gid we are not in: chown fails after bind (unless we are root).
    config.group = Some(Group::Id(4242));
    if bind(&config).is_err() {
        assert!(!path.exists(), "the file made by bind is removed again");
    }
}

#[test]
fn abstract_bind_and_accept() {
    let name = format!("uds-sys-test-{}", std::process::id());
    let mut config = Config::new(format!("@{name}"));
    config.socket_type = SocketType::Seqpacket;
    let bound = bind(&config).expect("bind");
    assert!(bound.file.is_none());
    assert!(matches!(bind(&config), Err(Error::InUse(_))));
    let client = Socket::new(Domain::UNIX, Type::SEQPACKET, None).expect("socket");
    client
        .connect(
            &config
                .address
                .as_ref()
                .expect("address")
                .to_sock_addr()
                .expect("addr"),
        )
        .expect("connect");
    let conn = accept(&bound.socket).expect("accept");
    assert!(conn.nonblocking().expect("flags"));
    let err = accept(&bound.socket).expect_err("nothing pending");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn peer_cred_is_ours() {
    let (a, _b) = UnixStream::pair().expect("pair");
    let (pid, uid, gid) = ids();
    assert_eq!(
        peer_cred(a.as_fd()).expect("cred"),
        PeerCred { pid, uid, gid }
    );
}

#[test]
fn recv_msg_detects_truncation() {
    let (a, b) = Socket::pair(Domain::UNIX, Type::SEQPACKET, None).expect("pair");
    let mut buf = [0; 4];
    send_nosignal(&a, b"0123456789").expect("send");
    assert_eq!(recv_msg(b.as_fd(), &mut buf).expect("recv"), (4, 10));
    assert_eq!(&buf, b"0123");
    a.send_vectored(&[IoSlice::new(b"ab"), IoSlice::new(b"c")])
        .expect("send");
    assert_eq!(recv_msg(b.as_fd(), &mut buf).expect("recv"), (3, 3));
    drop(a);
    assert_eq!(recv_msg(b.as_fd(), &mut buf).expect("eof"), (0, 0));
}

#[test]
fn recv_dgram_gives_sender_and_cred() {
    let dir = TempDir::new();
    let path = dir.join("d.sock");
    // Kept whole: dropping the bound socket's file guard removes the file.
    let bound = bind(&config(&path, SocketType::Dgram)).expect("bind");
    let server = &bound.socket;
    server.set_passcred(true).expect("passcred");
    let mut buf = [0; 64];

    let named = UnixDatagram::bind(dir.join("client.sock")).expect("client");
    named.send_to(b"hello", &path).expect("send");
    let got = recv_dgram(server, &mut buf, true, None).expect("recv");
    assert_eq!((got.len, got.truncated), (5, false));
    let (pid, uid, gid) = ids();
    assert_eq!(got.cred, Some(PeerCred { pid, uid, gid }));
    let from = got.from.expect("named sender");
    assert_eq!(from.as_pathname(), Some(dir.join("client.sock").as_path()));
    server.send_to(b"back", &from).expect("reply");
    assert_eq!(named.recv(&mut buf).expect("reply"), 4);

    let unnamed = UnixDatagram::unbound().expect("unbound");
    unnamed.send_to(&[7; 100], &path).expect("send");
    let got = recv_dgram(server, &mut buf, false, None).expect("recv");
    assert_eq!(
        (got.len, got.truncated, got.from.is_none(), got.cred),
        (64, true, true, None)
    );

    use std::os::linux::net::SocketAddrExt;
    let name = format!("uds-sys-client-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("name");
    let abstract_client = UnixDatagram::bind_addr(&addr).expect("abstract client");
    abstract_client.send_to(b"x", &path).expect("send");
    let from = recv_dgram(server, &mut buf, true, None)
        .expect("recv")
        .from
        .expect("abstract sender");
    assert_eq!(from.as_abstract_namespace(), Some(name.as_bytes()));
    server.send_to(b"yz", &from).expect("reply to abstract");
    assert_eq!(abstract_client.recv(&mut buf).expect("reply"), 2);
}

#[test]
fn notify_sends_one_datagram() {
    let dir = TempDir::new();
    let path = dir.join("notify.sock");
    let systemd = UnixDatagram::bind(&path).expect("bind");
    notify_to(path.as_os_str(), "READY=1").expect("notify");
    let mut buf = [0; 16];
    assert_eq!(systemd.recv(&mut buf).expect("recv"), 7);
    assert_eq!(&buf[..7], b"READY=1");
    let missing = dir.join("missing.sock");
    assert!(notify_to(missing.as_os_str(), "STOPPING=1").is_err());
}

#[test]
fn groups_limits_and_activation() {
    assert_eq!(resolve_group(&Group::Id(4242)).expect("id"), 4242);
    let err = resolve_group(&Group::Name("no-such-group-uds".into())).expect_err("unknown");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
    assert!(err
        .to_string()
        .contains("no such group 'no-such-group-uds'"));
    let dir = TempDir::new();
    let path = dir.join("g.sock");
    let mut config = config(&path, SocketType::Stream);
    config.group = Some(Group::Name("no-such-group-uds".into()));
    let err = bind(&config).expect_err("unknown group");
    assert!(
        matches!(
            err,
            Error::Io {
                step: "resolve group",
                ..
            }
        ),
        "{err}"
    );
    assert!(!path.exists(), "nothing left behind");
    if fs::read_to_string("/etc/group").is_ok_and(|g| g.starts_with("root:")) {
        assert_eq!(resolve_group(&Group::Name("root".into())).expect("root"), 0);
    }
    assert!(raise_nofile_limit().expect("rlimit") > 0);
    if std::env::var_os("LISTEN_PID").is_none() {
        assert!(inherited_sockets(SocketType::Stream)
            .expect("no activation")
            .is_none());
    }
}

#[test]
fn simultaneous_binds_over_a_stale_socket_one_wins() {
    let dir = TempDir::new();
    let path = dir.join("race.sock");
    for _ in 0..20 {
        // Every contender sees a socket, probes it, and may unlink it: only
        // the directory lock keeps one from removing a winner not yet
        // listening.
        let _ = fs::remove_file(&path);
        stale_socket(&path);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| bind(&config(&path, SocketType::Stream))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Error::InUse(_)))));
        let winner = results.into_iter().find_map(Result::ok).expect("winner");
        assert_eq!(
            winner.file.as_ref().map(SocketFile::id),
            file_id(&path).ok()
        );
    }
}

/// Re-runs this test in a child process with a listener on descriptor 3,
/// as systemd would pass it.
#[test]
fn socket_activation_takes_descriptor_3() {
    if let Some(expect) = std::env::var_os("UDS_SYS_ACTIVATION_CHILD") {
        return activation_child(expect == "dgram");
    }
    let dir = TempDir::new();
    let path = dir.join("activated.sock");
    let listener = UnixListener::bind(&path).expect("listener");
    let fd = listener.as_raw_fd();
    for expect in ["stream", "dgram"] {
        let mut cmd = rerun("socket_activation_takes_descriptor_3");
        cmd.env("UDS_SYS_ACTIVATION_CHILD", expect)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "test");
        // SAFETY: between fork and exec the closure only calls dup2 or
        // fcntl, both async-signal-safe; dup2 onto 3 clears close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                let rc = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
        let out = cmd.output().expect("spawn");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{expect}: {stdout}");
        assert!(stdout.contains("1 passed"), "child ran no test: {stdout}");
    }
}

fn activation_child(want_dgram: bool) {
    std::env::set_var("LISTEN_PID", std::process::id().to_string());
    if want_dgram {
        let err = inherited_sockets(SocketType::Dgram).expect_err("a stream socket");
        assert!(
            err.to_string().contains(
                "descriptor 3 is a Unix stream socket; --type dgram expects a Unix dgram socket"
            ),
            "{err}"
        );
        return;
    }
    let inherited = inherited_sockets(SocketType::Stream)
        .expect("activation")
        .expect("descriptor 3");
    assert!(inherited.metrics.is_none() && inherited.takeover.is_none());
    let socket = inherited.main;
    assert_eq!(socket.as_raw_fd(), 3);
    assert!(socket.nonblocking().expect("flags"));
    // The environment is read, never edited: a flag keeps the descriptor
    // from being taken twice.
    assert!(std::env::var_os("LISTEN_FDS").is_some());
    assert_eq!(
        accept(&socket).err().map(|e| e.kind()),
        Some(io::ErrorKind::WouldBlock)
    );
    assert!(inherited_sockets(SocketType::Stream)
        .expect("second call")
        .is_none());
}
