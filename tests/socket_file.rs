//! The socket file (SPEC "The socket file"): exact mode and group whatever
//! the umask, stale sockets replaced, live servers and non-sockets left
//! alone, clear one-line errors, one winner when two servers race, and
//! removal at shutdown only of our own file.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{bin, exists, run_to_exit, under_umask, Proc, TempDir, PATIENCE};

/// Asserts a runtime error: exit 1 and exactly one line on stderr, naming
/// `path` and containing `what`, and no panic.
fn assert_runtime_error(args: &[&str], path: &Path, what: &str) -> String {
    let (status, stderr) = run_to_exit(Command::new(bin()).args(args));
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].contains(&*path.to_string_lossy()), "{stderr}");
    assert!(lines[0].contains(what), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    stderr
}

fn inode(path: &Path) -> (u64, u64) {
    let m = fs::symlink_metadata(path).expect("lstat");
    (m.dev(), m.ino())
}

/// A short echo exchange proving someone serves `path`.
fn assert_serves(path: &Path) {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"ping\n").unwrap();
    let mut reply = [0; 5];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping\n");
}

#[test]
fn mode_is_exact_whatever_the_umask() {
    let dir = TempDir::new("sf-mode");
    for (i, umask) in ["000", "022", "077", "777"].into_iter().enumerate() {
        for mode in ["600", "640", "660", "666", "700", "777", "000"] {
            let path = dir.path(&format!("m{i}-{mode}.sock"));
            let p = path.to_str().unwrap();
            let mut server = Proc::spawn_cmd(&mut under_umask(umask, &["--mode", mode, p]));
            server.wait_for("listening on");
            let meta = fs::symlink_metadata(&path).unwrap();
            assert!(meta.file_type().is_socket());
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                u32::from_str_radix(mode, 8).unwrap(),
                "--mode {mode} under umask {umask}"
            );
            assert!(server.stop().success());
            assert!(!exists(&path));
        }
    }
    // Without --mode: 600.
    let path = dir.path("default.sock");
    let mut server = Proc::spawn_cmd(&mut under_umask("000", &[path.to_str().unwrap()]));
    server.wait_for("listening on");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert!(server.stop().success());
}

/// Our effective gid: the group of a file we just created.
fn our_gid(dir: &TempDir) -> u32 {
    let probe = dir.path("gid-probe");
    fs::write(&probe, b"").unwrap();
    let gid = fs::metadata(&probe).unwrap().gid();
    fs::remove_file(&probe).unwrap();
    gid
}

/// Some group from /etc/group other than `not`, as (name, gid).
fn other_group(not: u32) -> Option<(String, u32)> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let gid: u32 = f.nth(1)?.parse().ok()?;
        (gid != not && !name.is_empty()).then(|| (name.to_string(), gid))
    })
}

fn group_name(gid: u32) -> Option<String> {
    let groups = fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == gid.to_string()).then(|| f[0].to_string())
    })
}

fn assert_group(dir: &TempDir, tag: &str, group: &str, gid: u32) {
    let path = dir.path(&format!("g-{tag}.sock"));
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&["--group", group, "--mode", "660", p]);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.gid(), gid, "--group {group}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert!(server.stop().success());
}

#[test]
fn group_by_name_and_number() {
    let dir = TempDir::new("sf-group");
    let ours = our_gid(&dir);
    assert_group(&dir, "num", &ours.to_string(), ours);
    if let Some(name) = group_name(ours) {
        assert_group(&dir, "name", &name, ours);
    }
    // As root, a group we are not in: proves the chown really happens.
    if ours == 0 {
        if let Some((name, gid)) = other_group(ours) {
            assert_group(&dir, "other-num", &gid.to_string(), gid);
            assert_group(&dir, "other-name", &name, gid);
        }
    }
    // An unknown name: one line, exit 1, no file left behind.
    let path = dir.path("g-bad.sock");
    let stderr = assert_runtime_error(
        &["--group", "no-such-group-udsr", path.to_str().unwrap()],
        &path,
        "no-such-group-udsr",
    );
    assert!(stderr.contains("group"), "{stderr}");
    assert!(!exists(&path));
}

#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::new("sf-stale");
    let path = dir.path("s.sock");
    // A socket file nobody listens on any more.
    drop(UnixListener::bind(&path).unwrap());
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    let mut server = Proc::serve(&[path.to_str().unwrap()]);
    // (Not compared by inode: ext4 hands the freed number straight out
    // again.) A stale file accepts nobody; this one serves.
    assert_serves(&path);
    assert!(server.stop().success());
    assert!(!exists(&path));
}

#[test]
fn live_server_is_refused_and_left_serving() {
    let dir = TempDir::new("sf-live");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let mut first = Proc::serve(&[p]);
    let id = inode(&path);
    assert_runtime_error(&[p], &path, "already listening");
    assert_eq!(inode(&path), id, "the running server's file was replaced");
    assert_serves(&path);
    assert!(first.stop().success());
    assert!(!exists(&path));

    // Any live listener, not only ours, and of another type too.
    let other = UnixListener::bind(&path).unwrap();
    let id = inode(&path);
    assert_runtime_error(&[p], &path, "already listening");
    assert_runtime_error(&["--type", "seqpacket", p], &path, "already listening");
    assert_eq!(inode(&path), id);
    let _client = UnixStream::connect(&path).unwrap();
    other.accept().expect("the original listener still works");
}

#[test]
fn non_sockets_are_refused_and_untouched() {
    let dir = TempDir::new("sf-nonsock");
    // A regular file.
    let file = dir.path("file");
    fs::write(&file, b"precious").unwrap();
    assert_runtime_error(&[file.to_str().unwrap()], &file, "not a socket");
    assert_eq!(fs::read(&file).unwrap(), b"precious");

    // A directory, with something in it.
    let d = dir.path("dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("inside"), b"x").unwrap();
    assert_runtime_error(&[d.to_str().unwrap()], &d, "not a socket");
    assert!(fs::metadata(&d).unwrap().is_dir());
    assert_eq!(fs::read(d.join("inside")).unwrap(), b"x");

    // Symlinks: to a file, dangling, and to a stale socket.
    let stale = dir.path("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    for (name, target) in [
        ("to-file", file.clone()),
        ("dangling", dir.path("nowhere")),
        ("to-stale-socket", stale.clone()),
    ] {
        let link = dir.path(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_runtime_error(&[link.to_str().unwrap()], &link, "not a socket");
        assert_eq!(fs::read_link(&link).unwrap(), target, "{name}");
        assert!(!exists(&dir.path("nowhere")), "followed a dangling link");
    }
    assert!(fs::symlink_metadata(&stale)
        .unwrap()
        .file_type()
        .is_socket());
    assert_eq!(fs::read(&file).unwrap(), b"precious");
}

#[test]
fn unusable_paths_give_one_clear_line() {
    let dir = TempDir::new("sf-paths");
    let missing = dir.path("no-such-dir").join("s.sock");
    assert_runtime_error(&[missing.to_str().unwrap()], &missing, "parent directory");
    assert!(!exists(&dir.path("no-such-dir")));

    // A parent that is a file.
    let file = dir.path("plain");
    fs::write(&file, b"").unwrap();
    let under_file = file.join("s.sock");
    assert_runtime_error(&[under_file.to_str().unwrap()], &under_file, "parent");

    // sun_path holds 107 bytes and a NUL.
    let long = dir.path(&"x".repeat(120));
    assert_runtime_error(&[long.to_str().unwrap()], &long, "too long");
    assert!(!exists(&long));
    let name = format!("@{}", "y".repeat(120));
    let (status, stderr) = run_to_exit(Command::new(bin()).arg(&name));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("too long"), "{stderr}");
}

#[test]
fn two_servers_racing_for_one_path_leave_one_winner() {
    let dir = TempDir::new("sf-race");
    for round in 0..8 {
        let path = dir.path(&format!("r{round}.sock"));
        if round % 2 == 1 {
            // Both also race to clear a stale file.
            drop(UnixListener::bind(&path).unwrap());
        }
        let p = path.to_str().unwrap();
        let mut a = Proc::spawn(&[p]);
        let mut b = Proc::spawn(&[p]);
        // Wait for one of them to exit; the other must be serving.
        let deadline = Instant::now() + PATIENCE;
        let (mut winner, mut loser) = loop {
            if a.child.try_wait().unwrap().is_some() {
                break (b, a);
            }
            if b.child.try_wait().unwrap().is_some() {
                break (a, b);
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: both kept running"
            );
            thread::sleep(Duration::from_millis(5));
        };
        winner.wait_for("listening on");
        assert_eq!(loser.wait_exit().code(), Some(1), "round {round}");
        let line = loser.wait_for("uds-reactor:");
        assert!(line.contains("already listening"), "round {round}: {line}");
        assert!(
            !loser.log_text().contains("listening on"),
            "round {round}: the loser claims to listen"
        );
        assert_serves(&path);
        // The file is the winner's: it removes it on exit (only its own).
        assert!(winner.stop().success());
        assert!(
            !exists(&path),
            "round {round}: the winner did not own the file"
        );
    }
}

#[test]
fn shutdown_removes_only_our_own_file() {
    let dir = TempDir::new("sf-remove");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();

    // Ours: removed.
    let mut server = Proc::serve(&[p]);
    assert!(server.stop().success());
    assert!(!exists(&path));

    // Replaced by a newer socket (renamed over ours): left alone.
    let mut server = Proc::serve(&[p]);
    let newer_path = dir.path("newer.sock");
    let newer = UnixListener::bind(&newer_path).unwrap();
    fs::rename(&newer_path, &path).unwrap();
    let id = inode(&path);
    assert!(server.stop().success());
    let line = server.wait_for("left");
    assert!(line.contains(p), "{line}");
    assert_eq!(inode(&path), id, "the newer socket was removed");
    let _client = UnixStream::connect(&path).unwrap();
    newer.accept().expect("the newer socket still works");
    fs::remove_file(&path).unwrap();

    // Replaced by a regular file: left alone.
    let mut server = Proc::serve(&[p]);
    fs::remove_file(&path).unwrap();
    fs::write(&path, b"keep me").unwrap();
    assert!(server.stop().success());
    assert_eq!(fs::read(&path).unwrap(), b"keep me");
    fs::remove_file(&path).unwrap();

    // Removed by someone else: a clean exit anyway.
    let mut server = Proc::serve(&[p]);
    fs::remove_file(&path).unwrap();
    assert!(server.stop().success());
    assert!(!exists(&path));
}

/// The "listening on" line comes only once the file has its final mode: a
/// watcher that sees the file at all never sees it wider than --mode.
#[test]
fn file_never_appears_wider_than_mode() {
    let dir = TempDir::new("sf-watch");
    for round in 0..5 {
        let path = dir.path(&format!("w{round}.sock"));
        let p = path.to_str().unwrap().to_string();
        let mut server = Proc::spawn_cmd(&mut under_umask(
            "000",
            &["--mode", "600", "--log-level", "info", &p],
        ));
        let deadline = Instant::now() + PATIENCE;
        // Spin on lstat while the server starts up: any mode seen while the
        // socket accepts connections must be 600.
        let mut seen_listening = false;
        while !seen_listening {
            assert!(Instant::now() < deadline);
            if exists(&path) && UnixStream::connect(&path).is_ok() {
                let mode = fs::symlink_metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o7777, 0o600, "connectable with mode {mode:o}");
                seen_listening = true;
            }
        }
        server.wait_for("listening on");
        assert!(server.stop().success());
    }
}
