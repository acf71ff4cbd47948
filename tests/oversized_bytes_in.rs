//! `bytes_in` counts the bytes that really arrived: a seqpacket message or
//! a datagram longer than `--max-frame` counts its whole length, not the
//! `--max-frame` bytes the server looked at before refusing it.

mod common;

use std::path::{Path, PathBuf};

use common::{stat, tagged, Proc, TempDir, PATIENCE};
use socket2::{Domain, SockAddr, Socket, Type};

const LONG: usize = 10_000;

fn serve(ty: &str) -> (TempDir, Proc, PathBuf) {
    let dir = TempDir::new(&format!("oversized-{ty}"));
    let path = dir.path("s.sock");
    let p = Proc::serve(&[path.to_str().unwrap(), "--type", ty, "--max-frame", "1K"]);
    (dir, p, path)
}

/// Stops the server and returns its final stats line.
fn final_stats(p: &mut Proc) -> String {
    p.signal(15);
    let line = p.wait_for("stats open=");
    assert!(p.wait_exit().success(), "{}", p.log_text());
    line
}

fn client(ty: Type, path: &Path) -> Socket {
    let s = Socket::new(Domain::UNIX, ty, None).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    if ty == Type::SEQPACKET {
        s.connect(&SockAddr::unix(path).unwrap()).expect("connect");
    }
    s
}

#[test]
fn seqpacket_counts_the_whole_oversized_message() {
    let (_dir, mut p, path) = serve("seqpacket");
    let s = client(Type::SEQPACKET, &path);
    assert_eq!(s.send(&tagged(1, 100)).unwrap(), 100);
    assert_eq!(s.send(&tagged(2, LONG)).unwrap(), LONG);
    // The echo of the first, then EOF: the long one closed the connection.
    let mut buf = [0u8; 2 * LONG];
    let n = std::io::Read::read(&mut &s, &mut buf).expect("echo");
    assert_eq!(&buf[..n], &tagged(1, 100)[..]);
    let n = std::io::Read::read(&mut &s, &mut buf).expect("EOF");
    assert_eq!(n, 0, "closed after the oversized message");
    p.wait_for("exceeds --max-frame");
    let line = final_stats(&mut p);
    assert_eq!(
        stat(&line, "bytes_in"),
        (100 + LONG) as u64,
        "bytes_in must count the {LONG}-byte message whole: {line}"
    );
}

#[test]
fn dgram_counts_the_whole_oversized_datagram() {
    let (dir, mut p, path) = serve("dgram");
    let c = client(Type::DGRAM, &path);
    c.bind(&SockAddr::unix(dir.path("c.sock")).unwrap())
        .unwrap();
    let to = SockAddr::unix(&path).unwrap();
    assert_eq!(c.send_to(&tagged(2, LONG), &to).unwrap(), LONG);
    assert_eq!(c.send_to(&tagged(1, 100), &to).unwrap(), 100);
    // Only the short one comes back: the long one was dropped.
    let mut buf = [0u8; 2 * LONG];
    let n = std::io::Read::read(&mut &c, &mut buf).expect("echo");
    assert_eq!(&buf[..n], &tagged(1, 100)[..]);
    let line = final_stats(&mut p);
    assert_eq!(stat(&line, "dropped"), 1, "{line}");
    assert_eq!(
        stat(&line, "bytes_in"),
        (100 + LONG) as u64,
        "bytes_in must count the {LONG}-byte datagram whole: {line}"
    );
}
