//! Peer credentials against the real binary: with `--allow-uid` or
//! `--allow-gid`, a peer matching either is served and any other is
//! closed at once, unanswered, logged with its pid/uid/gid and counted.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;

use common::{connect, our_ids, Proc, TempDir, PATIENCE};
use socket2::{Domain, SockAddr, Socket, Type};

/// An id nobody running these tests has.
const STRANGER: &str = "12345";

fn served(s: &mut UnixStream) {
    s.write_all(b"let me in").unwrap();
    let mut got = [0; 9];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(&got, b"let me in");
}

/// The server closes without answering: EOF, or a reset because our
/// bytes were still unread when it closed.
fn refused(s: &mut UnixStream) {
    let _ = s.write_all(b"let me in");
    let mut buf = [0; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected to be closed unanswered, got {other:?}"),
    }
}

/// Starts a server of type `ty` with `flags` in a fresh directory.
fn serve(tag: &str, flags: &[&str], ty: &str) -> (TempDir, Proc, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let path = dir.path("s.sock");
    let mut args = vec![path.to_str().unwrap(), "--type", ty];
    args.extend_from_slice(flags);
    let server = Proc::serve(&args);
    (dir, server, path)
}

#[test]
fn allowed_uid_is_served() {
    let (uid, _) = our_ids();
    let uid = uid.to_string();
    let (_dir, mut server, path) = serve("cred-uid-ok", &["--allow-uid", &uid], "stream");
    served(&mut connect(&path));
    assert_eq!(server.counter("rejected_cred"), 0);
    assert!(server.stop().success());
}

#[test]
fn other_uid_is_closed_logged_and_counted() {
    let (uid, gid) = our_ids();
    let (_dir, mut server, path) = serve("cred-uid-no", &["--allow-uid", STRANGER], "stream");
    refused(&mut connect(&path));
    let line = server.wait_for("rejected peer");
    let who = format!("pid={} uid={uid} gid={gid}", std::process::id());
    assert!(line.contains(&who), "{line:?} lacks {who:?}");
    assert!(line.contains("WARN"), "{line:?}");
    assert_eq!(server.counter("rejected_cred"), 1);
    assert_eq!(server.counter("accepted"), 0);
    assert!(server.stop().success());
}

#[test]
fn allowed_gid_is_served() {
    let (_, gid) = our_ids();
    let gid = gid.to_string();
    let (_dir, mut server, path) = serve("cred-gid-ok", &["--allow-gid", &gid], "stream");
    served(&mut connect(&path));
    assert_eq!(server.counter("rejected_cred"), 0);
    assert!(server.stop().success());
}

#[test]
fn other_gid_is_closed_logged_and_counted() {
    let (_dir, mut server, path) = serve("cred-gid-no", &["--allow-gid", STRANGER], "stream");
    refused(&mut connect(&path));
    refused(&mut connect(&path));
    server.wait_for("rejected peer pid=");
    assert_eq!(server.counter("rejected_cred"), 2);
    assert!(server.stop().success());
}

/// Either list admits: a uid match with a foreign gid list, and the
/// other way round.
#[test]
fn either_list_admits() {
    let (uid, gid) = our_ids();
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let flags = ["--allow-uid", STRANGER, "--allow-gid", &gid];
    let (_dir, mut server, path) = serve("cred-either", &flags, "stream");
    served(&mut connect(&path));
    assert!(server.stop().success());

    let flags = ["--allow-uid", &uid, "--allow-gid", STRANGER];
    let (_dir, mut server, path) = serve("cred-either2", &flags, "stream");
    served(&mut connect(&path));
    assert!(server.stop().success());
}

/// Seqpacket connections go through the same check.
#[test]
fn seqpacket_peers_are_checked_too() {
    let (_dir, mut server, path) = serve("cred-seq", &["--allow-uid", STRANGER], "seqpacket");
    let s = Socket::new(Domain::UNIX, Type::SEQPACKET, None).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.connect(&SockAddr::unix(&path).unwrap()).unwrap();
    let _ = s.send(b"let me in");
    let mut buf = [std::mem::MaybeUninit::new(0u8); 16];
    match s.recv(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected to be closed unanswered, got {other:?}"),
    }
    server.wait_for("rejected peer pid=");
    assert_eq!(server.counter("rejected_cred"), 1);
    assert!(server.stop().success());
}

/// `--allow-gid` counts supplementary groups (`SO_PEERGROUPS`), as file
/// permissions do: a client whose primary gid is not listed but one of
/// its groups is gets served. The client runs under `setpriv --groups`,
/// which needs CAP_SETGID: without it (or without setpriv) the test says
/// so and passes.
#[test]
fn a_supplementary_group_admits() {
    let (_dir, mut server, path) = serve("cred-groups", &["--allow-gid", STRANGER], "stream");
    let run = |groups: &str| {
        std::process::Command::new("setpriv")
            .args(["--groups", groups, "--", common::bin(), "client"])
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(b"let me in\n")?;
                drop(stdin);
                child.wait_with_output()
            })
    };
    let member = match run(STRANGER) {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("setgroups") => {
            eprintln!("skipped: setpriv cannot set groups here (needs CAP_SETGID)");
            return;
        }
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: setpriv not runnable: {e}");
            return;
        }
    };
    assert_eq!(
        String::from_utf8_lossy(&member.stdout),
        "let me in\n",
        "a member of {STRANGER} by supplementary group is served: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    let other = run("54321").expect("setpriv");
    assert!(other.stdout.is_empty(), "not a member: refused");
    server.wait_for("rejected peer pid=");
    assert_eq!(server.counter("rejected_cred"), 1);
    assert!(server.stop().success());
}
