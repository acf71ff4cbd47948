//! `uds-reactor client` against the real server: every type and framing
//! (stdin in, stdout checked), datagram addresses cleaned up, errors and
//! exit statuses.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{bin, exists, exit_within, pattern, Proc, TempDir};

/// What a finished client did.
struct Outcome {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: String,
    pid: u32,
}

/// Runs `uds-reactor client ARGS` with `input` on stdin; fails the test if
/// it has not exited within PATIENCE.
fn client(args: &[&str], input: &[u8]) -> Outcome {
    let mut child = Command::new(bin())
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // the client may exit first
    });
    let mut stdout = child.stdout.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).unwrap();
        v
    });
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).unwrap();
        s
    });
    let status = exit_within(&mut child, &format!("client {args:?}"));
    feeder.join().unwrap();
    Outcome {
        code: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        pid,
    }
}

/// Stops the server (exit 0 expected) and returns its log once the final
/// counters line is in.
fn stop(server: &mut Proc) -> String {
    assert!(server.stop().success());
    server.wait_for(" bytes_in=");
    server.log_text()
}

fn ok(o: &Outcome) {
    assert_eq!(o.code, Some(0), "stderr: {}", o.stderr);
    assert!(o.stderr.is_empty(), "unexpected stderr: {}", o.stderr);
}

const LINES: &[u8] = b"alpha\n\nbeta gamma\n\x00\x01binary\xff\nno newline at end";
const LINES_OUT: &[u8] = b"alpha\n\nbeta gamma\n\x00\x01binary\xff\nno newline at end\n";

#[test]
fn stream_raw_is_a_byte_pipe_with_half_close() {
    let dir = TempDir::new("client-raw");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&[p]);
    let data = pattern(1, 3 << 20);
    let o = client(&[p], &data);
    ok(&o);
    assert!(
        o.stdout == data,
        "echo differs ({} bytes back)",
        o.stdout.len()
    );
    let o = client(&["--type", "stream", "--framing", "raw", p], b"");
    ok(&o);
    assert!(o.stdout.is_empty());
    assert!(server.stop().success());
}

#[test]
fn stream_line_and_length_send_one_frame_per_line() {
    let dir = TempDir::new("client-framed");
    for framing in ["line", "length"] {
        let path = dir.path(&format!("{framing}.sock"));
        let p = path.to_str().unwrap();
        let mut server = Proc::serve(&["--framing", framing, p]);
        let o = client(&["--framing", framing, p], LINES);
        ok(&o);
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(LINES_OUT),
            "{framing}"
        );
        // Many lines in one pipe: sent in batches, all answered in order.
        let many: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let o = client(&["--framing", framing, p], &many);
        ok(&o);
        assert!(o.stdout == many, "{framing}: {} bytes back", o.stdout.len());
        let log = stop(&mut server);
        assert!(!log.contains("ended inside a frame"), "{log}");
    }
}

#[test]
fn length_framing_puts_a_big_endian_header_on_the_wire() {
    // A raw server shows exactly what the client sends; the client decodes
    // the same bytes back.
    let dir = TempDir::new("client-wire");
    let path = dir.path("raw.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&[p]);
    let o = client(&["--framing", "length", p], b"hi\n\nabc");
    ok(&o);
    assert_eq!(o.stdout, b"hi\n\nabc\n");
    let log = stop(&mut server);
    // 4+2 + 4+0 + 4+3 wire bytes went through the raw echo.
    assert!(log.contains("bytes_in=17"), "{log}");
}

#[test]
fn seqpacket_sends_one_message_per_line() {
    let dir = TempDir::new("client-seq");
    let path = dir.path("q.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&["--type", "seqpacket", p]);
    let o = client(&["--type", "seqpacket", p], LINES);
    ok(&o);
    // The empty line is not sent: zero bytes would read as end of stream.
    assert_eq!(
        o.stdout,
        b"alpha\nbeta gamma\n\x00\x01binary\xff\nno newline at end\n"
    );
    let log = stop(&mut server);
    assert!(log.contains("frames_in=4"), "{log}");
}

#[test]
fn dgram_binds_a_temporary_file_and_removes_it() {
    let dir = TempDir::new("client-dgram");
    let path = dir.path("d.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&["--type", "dgram", p]);
    let o = client(&["--type", "dgram", p], LINES);
    ok(&o);
    assert_eq!(
        o.stdout,
        LINES_OUT,
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let prefix = format!("uds-reactor-client-{}-", o.pid);
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "temporary socket left behind: {left:?}");
    assert!(server.stop().success());
}

#[test]
fn abstract_addresses_for_stream_and_dgram() {
    let name = format!("@udsr-client-test-{}", std::process::id());
    let mut server = Proc::serve(&["--framing", "line", &name]);
    let o = client(&["--framing", "line", &name], b"one\ntwo\n");
    ok(&o);
    assert_eq!(o.stdout, b"one\ntwo\n");
    assert!(server.stop().success());

    let dname = format!("{name}-d");
    let mut server = Proc::serve(&["--type", "dgram", &dname]);
    let o = client(&["--type", "dgram", &dname], b"x\ny\n");
    ok(&o);
    assert_eq!(o.stdout, b"x\ny\n");
    assert!(server.stop().success());
}

#[test]
fn missing_server_is_one_line_and_exit_1() {
    let dir = TempDir::new("client-missing");
    let path = dir.path("nobody.sock");
    let p = path.to_str().unwrap();
    for ty in ["stream", "seqpacket", "dgram"] {
        let o = client(&["--type", ty, p], b"hello\n");
        assert_eq!(o.code, Some(1), "{ty}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{ty}: {}", o.stderr);
        let want = format!("uds-reactor client: connect {p}: ");
        assert!(o.stderr.starts_with(&want), "{ty}: {}", o.stderr);
        assert!(o.stderr.contains("No such file"), "{}", o.stderr);
        assert!(!exists(&path));
    }
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &["--bogus", "/tmp/x.sock"],
        &[],
        &["--type", "dgram", "--framing", "line", "/tmp/x.sock"],
        &["--type", "pipe", "/tmp/x.sock"],
        &["--max-frame", "12Q", "/tmp/x.sock"],
    ];
    for args in cases {
        let o = client(args, b"");
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("error:"), "{args:?}: {}", o.stderr);
        assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    }
}

#[test]
fn an_input_line_over_max_frame_is_an_error() {
    let dir = TempDir::new("client-big");
    let path = dir.path("l.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&["--framing", "line", p]);
    let o = client(
        &["--framing", "line", "--max-frame", "8", p],
        b"short\nthis line is too long\n",
    );
    assert_eq!(o.code, Some(1), "{}", o.stderr);
    assert_eq!(o.stdout, b"short\n");
    assert!(o.stderr.contains("exceeds --max-frame 8"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    assert!(server.stop().success());
}
