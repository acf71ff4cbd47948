//! Linux abstract-namespace addresses (`@name`) against the real binary:
//! stream, seqpacket and dgram all echo, replies reach abstract-addressed
//! datagram senders, no file appears anywhere, the missing-access-control
//! warning is logged exactly when it should be, and socket-file options
//! with an abstract address are usage errors.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Proc, TempDir, PATIENCE};
use socket2::{Domain, SockAddr, Socket, Type};

/// A name no other test (or test run) uses.
fn unique_name(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("udsr-abs-{}-{n}-{tag}", std::process::id())
}

/// Starts the binary on `@name` with `args`, its working directory `cwd`.
fn serve_in(cwd: &Path, name: &str, args: &[&str]) -> Proc {
    let at = format!("@{name}");
    let mut p = Proc::spawn_cmd(
        Command::new(common::bin())
            .arg(&at)
            .args(args)
            .current_dir(cwd),
    );
    p.wait_for("listening on");
    p
}

fn abstract_addr(name: &str) -> SocketAddr {
    SocketAddr::from_abstract_name(name).expect("abstract address")
}

/// Whether the kernel lists `@name` among bound Unix sockets.
fn listed_in_proc(name: &str) -> bool {
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    let want = format!("@{name}");
    table
        .lines()
        .any(|l| l.split_whitespace().last() == Some(want.as_str()))
}

/// Asserts that nothing named like `name` exists: the working directory
/// stays empty, and neither `name` nor `@name` is a path there or in /tmp.
fn assert_no_file(cwd: &Path, name: &str) {
    let entries: Vec<_> = std::fs::read_dir(cwd).unwrap().collect();
    assert!(entries.is_empty(), "files appeared in the cwd: {entries:?}");
    for dir in [cwd, Path::new("/tmp"), &std::env::temp_dir()] {
        for candidate in [name.to_string(), format!("@{name}")] {
            let path = dir.join(&candidate);
            assert!(!common::exists(&path), "{} exists", path.display());
        }
    }
}

#[test]
fn stream_echoes_on_an_abstract_name_without_a_file() {
    let cwd = TempDir::new("abstract-stream");
    let name = unique_name("stream");
    let mut p = serve_in(&cwd.0, &name, &[]);
    assert!(listed_in_proc(&name), "bound in the abstract namespace");
    let mut s = UnixStream::connect_addr(&abstract_addr(&name)).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"hello abstract").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"hello abstract");
    assert_no_file(&cwd.0, &name);
    assert!(p.stop().success());
    assert_no_file(&cwd.0, &name);
    assert!(!listed_in_proc(&name), "the name is released at exit");
}

#[test]
fn seqpacket_echoes_on_an_abstract_name_without_a_file() {
    let cwd = TempDir::new("abstract-seqpacket");
    let name = unique_name("seqpacket");
    let mut p = serve_in(&cwd.0, &name, &["--type", "seqpacket"]);
    let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    let mut raw = vec![0u8];
    raw.extend_from_slice(name.as_bytes());
    let addr = SockAddr::unix(OsStr::from_bytes(&raw)).unwrap();
    s.connect(&addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    for msg in [&b"one"[..], b"two two", b"3"] {
        assert_eq!(s.send(msg).unwrap(), msg.len());
    }
    for msg in [&b"one"[..], b"two two", b"3"] {
        let mut buf = [0; 64];
        let n = (&s).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg, "one message each, boundaries kept");
    }
    assert_no_file(&cwd.0, &name);
    assert!(p.stop().success());
    assert_no_file(&cwd.0, &name);
}

#[test]
fn dgram_answers_abstract_and_path_senders_without_a_file() {
    let cwd = TempDir::new("abstract-dgram");
    let files = TempDir::new("abstract-dgram-clients");
    let name = unique_name("dgram");
    let mut p = serve_in(&cwd.0, &name, &["--type", "dgram"]);
    let server = abstract_addr(&name);

    // A client bound to an abstract address of its own.
    let client_name = unique_name("dgram-client");
    let c = UnixDatagram::bind_addr(&abstract_addr(&client_name)).expect("bind");
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.send_to_addr(b"from abstract", &server).unwrap();
    let mut buf = [0; 64];
    let (n, from) = c.recv_from(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"from abstract");
    assert_eq!(from.as_abstract_name(), Some(name.as_bytes()));

    // And one bound to a path: replies reach it too.
    let c2 = UnixDatagram::bind(files.path("c.sock")).unwrap();
    c2.set_read_timeout(Some(PATIENCE)).unwrap();
    c2.send_to_addr(b"from a path", &server).unwrap();
    let n = c2.recv(&mut buf).expect("reply");
    assert_eq!(&buf[..n], b"from a path");

    assert_no_file(&cwd.0, &name);
    assert!(p.stop().success());
    assert_no_file(&cwd.0, &name);
}

#[test]
fn the_warning_about_access_control_comes_only_without_allow_rules() {
    let uid = common::our_ids().0.to_string();
    for ty in ["stream", "seqpacket", "dgram"] {
        let cwd = TempDir::new("abstract-warn");
        let name = unique_name(ty);
        let mut p = serve_in(&cwd.0, &name, &["--type", ty]);
        let warn = p.wait_for("abstract address");
        assert!(
            warn.contains("WARN") && warn.contains(&format!("@{name}")),
            "{warn}"
        );
        assert!(warn.contains("--allow-uid"), "says what to do: {warn}");
        assert!(p.stop().success());

        let mut p = serve_in(&cwd.0, &name, &["--type", ty, "--allow-uid", &uid]);
        assert!(p.stop().success());
        p.wait_for("stats open="); // the last line: every earlier one is in
        assert!(
            !p.log_text().contains("abstract address"),
            "{ty}: no warning with --allow-uid:\n{}",
            p.log_text()
        );
    }
}

#[test]
fn allowed_peers_are_served_on_an_abstract_name() {
    let cwd = TempDir::new("abstract-allowed");
    let name = unique_name("allowed");
    let uid = common::our_ids().0.to_string();
    let mut p = serve_in(&cwd.0, &name, &["--allow-uid", &uid]);
    let mut s = UnixStream::connect_addr(&abstract_addr(&name)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"ok").unwrap();
    let mut got = [0; 2];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ok");
    assert!(p.stop().success());
}

#[test]
fn a_name_in_use_is_refused_and_free_again_after_exit() {
    let cwd = TempDir::new("abstract-in-use");
    let name = unique_name("in-use");
    let mut first = serve_in(&cwd.0, &name, &[]);
    let out = Command::new(common::bin())
        .arg(format!("@{name}"))
        .current_dir(&cwd.0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("@{name}")) && err.contains("already"),
        "{err}"
    );
    // The first server is unharmed.
    let mut s = UnixStream::connect_addr(&abstract_addr(&name)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(b"x").unwrap();
    let mut got = [0; 1];
    s.read_exact(&mut got).unwrap();
    drop(s);
    assert!(first.stop().success());
    // Nothing was left behind to clean up: the name binds at once.
    let mut second = serve_in(&cwd.0, &name, &[]);
    assert!(second.stop().success());
}

#[test]
fn socket_file_options_with_an_abstract_address_are_usage_errors() {
    let name = format!("@{}", unique_name("usage"));
    for (flag, value) in [("--mode", "660"), ("--group", "0")] {
        let out = Command::new(common::bin())
            .args([name.as_str(), flag, value])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag}: {err}");
        let first = err.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error:") && first.contains(flag) && first.contains("abstract"),
            "{flag}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
