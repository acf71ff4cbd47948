//! The example handlers in `examples/`, run in the real library server on
//! a thread and talked to over real Unix sockets.

#[allow(dead_code)]
#[path = "../examples/upper.rs"]
mod upper;

#[allow(dead_code)]
#[path = "../examples/kv.rs"]
mod kv;

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{connect, Library, TempDir, PATIENCE};

fn request(s: &mut UnixStream, payload: &[u8]) -> Vec<u8> {
    let mut wire = (payload.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(payload);
    s.write_all(&wire).expect("write request");
    reply(s)
}

fn reply(s: &mut UnixStream) -> Vec<u8> {
    let mut header = [0; 4];
    s.read_exact(&mut header).expect("reply header");
    let mut payload = vec![0; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut payload).expect("reply payload");
    payload
}

#[test]
fn upper_answers_each_line_uppercased_even_split_and_unterminated() {
    let dir = TempDir::new("handlers-upper");
    let path = dir.path("upper.sock");
    let server = Library::start(upper::config(&path), upper::Upper);

    let mut s = connect(&path);
    // Two lines, the second split across writes, then a tail without '\n'.
    s.write_all(b"hello, World 1\nsecond ").expect("write");
    s.write_all(b"line\n\xffbytes").expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    BufReader::new(&s).read_to_end(&mut out).expect("read");
    // The unterminated tail is answered as a whole line: send() adds '\n'.
    assert_eq!(out, b"HELLO, WORLD 1\nSECOND LINE\n\xffBYTES\n");

    let stats = server.stop();
    assert_eq!(stats.frames_in, 3);
    assert_eq!(stats.frames_out, 3);
}

#[test]
fn upper_serves_connections_independently() {
    let dir = TempDir::new("handlers-upper-many");
    let path = dir.path("upper.sock");
    let _server = Library::start(upper::config(&path), upper::Upper);

    let mut clients: Vec<_> = (0..8).map(|_| connect(&path)).collect();
    for (i, s) in clients.iter_mut().enumerate() {
        s.write_all(format!("client {i}\n").as_bytes())
            .expect("write");
    }
    for (i, s) in clients.iter().enumerate() {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        assert_eq!(line, format!("CLIENT {i}\n"));
    }
}

#[test]
fn kv_stores_shares_counts_and_quits() {
    let dir = TempDir::new("handlers-kv");
    let path = dir.path("kv.sock");
    let server = Library::start(kv::config(&path), kv::Kv::default());

    let mut a = connect(&path);
    let mut b = connect(&path);
    assert_eq!(request(&mut a, b"SET greeting hello world"), b"OK");
    // The map is shared: another connection sees the value.
    assert_eq!(request(&mut b, b"get greeting"), b"VALUE hello world");
    // Values are any bytes, including empty ones and newlines.
    assert_eq!(request(&mut a, b"SET k \n\x00"), b"OK");
    assert_eq!(request(&mut b, b"GET k"), b"VALUE \n\x00");
    assert_eq!(request(&mut a, b"SET empty "), b"OK");
    assert_eq!(request(&mut a, b"GET empty"), b"VALUE ");
    assert_eq!(request(&mut b, b"DEL greeting"), b"OK");
    assert_eq!(request(&mut a, b"GET greeting"), b"NOTFOUND");
    assert_eq!(request(&mut a, b"DEL greeting"), b"NOTFOUND");
    // Counts are per connection: a made 6 requests, this is its 7th.
    assert_eq!(request(&mut a, b"COUNT"), b"OK 7");
    assert_eq!(request(&mut b, b"COUNT"), b"OK 4");
    assert!(request(&mut a, b"FROB x").starts_with(b"ERR "));
    assert!(request(&mut a, b"SET onlykey").starts_with(b"ERR usage"));
    assert!(request(&mut a, b"").starts_with(b"ERR "));

    // Pipelined requests in one write get their replies in order.
    let mut wire = Vec::new();
    for req in [&b"SET p 1"[..], b"GET p", b"QUIT", b"GET p"] {
        wire.extend_from_slice(&(req.len() as u32).to_be_bytes());
        wire.extend_from_slice(req);
    }
    a.write_all(&wire).expect("write pipeline");
    assert_eq!(reply(&mut a), b"OK");
    assert_eq!(reply(&mut a), b"VALUE 1");
    assert_eq!(reply(&mut a), b"BYE");
    // QUIT closes the connection: nothing follows, the GET after it is
    // ignored.
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).expect("EOF after BYE");
    assert_eq!(rest, b"");

    // The other connection is unaffected.
    assert_eq!(request(&mut b, b"GET p"), b"VALUE 1");
    drop(b);
    let stats = server.stop();
    assert_eq!(stats.accepted, 2);
}

#[test]
fn kv_oversized_request_closes_only_that_connection() {
    let dir = TempDir::new("handlers-kv-limit");
    let path = dir.path("kv.sock");
    let mut config = kv::config(&path);
    config.max_frame = 1024;
    let _server = Library::start(config, kv::Kv::default());

    let mut good = connect(&path);
    let mut bad = connect(&path);
    bad.write_all(&(1u32 << 30).to_be_bytes())
        .expect("write header");
    let mut rest = Vec::new();
    bad.set_read_timeout(Some(PATIENCE.max(Duration::from_secs(1))))
        .expect("timeout");
    bad.read_to_end(&mut rest).expect("closed");
    assert_eq!(rest, b"");
    assert_eq!(request(&mut good, b"SET a b"), b"OK");
    assert_eq!(request(&mut good, b"GET a"), b"VALUE b");
}
