//! `uds-reactor load` against the real server: bounded runs of every type
//! and framing count exactly what was asked, the JSON summary parses, and
//! a server that corrupts, drops or cuts off echoes is caught.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::{bin, Proc, TempDir, PATIENCE};

/// Runs `uds-reactor load ARGS` to completion (at most PATIENCE).
fn load(args: &[&str]) -> Output {
    let child = Command::new(bin())
        .arg("load")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.expect("wait for load"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("load {args:?} did not finish");
        }
    }
}

/// Stops the server (exit 0 expected) and returns its log once the final
/// counters line is in.
fn stop(server: &mut Proc) -> String {
    assert!(server.stop().success());
    server.wait_for(" bytes_in=");
    server.log_text()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The number after `"key":` in a flat-enough JSON text.
fn field(json: &str, key: &str) -> f64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} not a number in {json}"))
}

/// Checks the JSON with python3's parser when there is one.
fn parses_as_json(json: &str) {
    let Ok(status) = Command::new("python3")
        .args([
            "-c",
            "import json,sys; d=json.loads(sys.argv[1]); assert d['errors']==0",
        ])
        .arg(json)
        .status()
    else {
        return; // no python3: the field checks stand alone
    };
    assert!(status.success(), "python3 rejects {json}");
}

/// A load run that must succeed; returns its JSON summary.
fn load_json(args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = load(&all);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    let json = text(&out.stdout).trim().to_owned();
    assert!(json.starts_with('{') && json.ends_with('}'), "{json}");
    assert_eq!(field(&json, "errors"), 0.0, "{json}");
    parses_as_json(&json);
    json
}

#[test]
fn stream_framings_count_exactly_what_was_asked() {
    let dir = TempDir::new("load-stream");
    for framing in ["raw", "line", "length"] {
        let path = dir.path(&format!("{framing}.sock"));
        let p = path.to_str().unwrap();
        let mut server = Proc::serve(&["--framing", framing, p]);
        let json = load_json(&[
            "--framing",
            framing,
            "-c",
            "4",
            "-P",
            "8",
            "-s",
            "100",
            "-n",
            "5003",
            p,
        ]);
        assert_eq!(field(&json, "messages"), 5003.0, "{json}");
        assert_eq!(field(&json, "connections_opened"), 4.0, "{json}");
        let wire = 100.0
            + if framing == "raw" {
                0.0
            } else if framing == "line" {
                1.0
            } else {
                4.0
            };
        assert_eq!(field(&json, "bytes"), 5003.0 * wire, "{json}");
        assert!(
            field(&json, "msgs_per_sec") > 0.0 && field(&json, "p99") > 0.0,
            "{json}"
        );
        let log = stop(&mut server);
        assert!(
            log.contains(&format!("bytes_in={}", 5003.0 * wire)),
            "{log}"
        );
    }
}

#[test]
fn large_stream_messages_and_deep_pipelines() {
    let dir = TempDir::new("load-big");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&[p]);
    let json = load_json(&["-c", "3", "-s", "200K", "-P", "4", "-n", "60", p]);
    assert_eq!(field(&json, "messages"), 60.0, "{json}");
    assert!(server.stop().success());
}

#[test]
fn seqpacket_and_dgram_messages() {
    let dir = TempDir::new("load-msgs");
    for ty in ["seqpacket", "dgram"] {
        let path = dir.path(&format!("{ty}.sock"));
        let p = path.to_str().unwrap();
        let mut server = Proc::serve(&["--type", ty, p]);
        let json = load_json(&[
            "--type", ty, "-c", "3", "-P", "16", "-s", "1000", "-n", "3000", p,
        ]);
        assert_eq!(field(&json, "messages"), 3000.0, "{json}");
        let log = stop(&mut server);
        assert!(
            log.contains("frames_in=3000") && log.contains("dropped=0"),
            "{log}"
        );
    }
    // Datagram clients remove their temporary addresses.
    let left = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("uds-reactor-load-")
        })
        .count();
    assert_eq!(left, 0, "temporary datagram sockets left behind");
}

#[test]
fn abstract_dgram_and_human_summary() {
    let name = format!("@udsr-load-test-{}", std::process::id());
    let mut server = Proc::serve(&["--type", "dgram", &name]);
    let out = load(&["--type", "dgram", "-n", "500", &name]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(summary.contains("messages    500 in"), "{summary}");
    assert!(
        summary.contains("msgs/s") && summary.contains("p99.9"),
        "{summary}"
    );
    assert!(summary.contains("errors      0"), "{summary}");
    assert!(server.stop().success());
}

#[test]
fn churn_opens_one_connection_per_echo() {
    let dir = TempDir::new("load-churn");
    for ty in ["stream", "seqpacket"] {
        let path = dir.path(&format!("{ty}.sock"));
        let p = path.to_str().unwrap();
        let mut server = Proc::serve(&["--type", ty, p]);
        let json = load_json(&["--type", ty, "--churn", "-c", "4", "-n", "300", p]);
        assert_eq!(field(&json, "messages"), 300.0, "{json}");
        assert_eq!(field(&json, "connections_opened"), 300.0, "{json}");
        assert!(field(&json, "conns_per_sec") > 0.0, "{json}");
        let log = stop(&mut server);
        assert!(log.contains("accepted=300"), "{log}");
    }
}

#[test]
fn duration_bound_runs_stop_on_time() {
    let dir = TempDir::new("load-time");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&["--framing", "length", p]);
    let started = Instant::now();
    let json = load_json(&["--framing", "length", "-c", "2", "-d", "0.3", p]);
    assert!(started.elapsed().as_secs_f64() < 5.0);
    assert!(field(&json, "messages") > 0.0, "{json}");
    assert!(field(&json, "seconds") >= 0.3, "{json}");
    assert!(server.stop().success());
}

/// A one-connection stream server on a thread that echoes `limit` bytes,
/// changing them with `mangle`, then closes; with `limit` 0 it reads and
/// never answers.
fn bad_server(path: &std::path::Path, limit: usize, mangle: fn(usize, &mut [u8])) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut buf = vec![0; 64 << 10];
        let mut seen = 0;
        if limit == 0 {
            while let Ok(1..) = sock.read(&mut buf) {}
        }
        while seen < limit {
            let n = match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min(limit - seen),
            };
            mangle(seen, &mut buf[..n]);
            if sock.write_all(&buf[..n]).is_err() {
                return;
            }
            seen += n;
        }
    });
}

#[test]
fn a_corrupting_server_fails_verification() {
    let dir = TempDir::new("load-corrupt");
    let path = dir.path("flip.sock");
    // Flips one bit of byte 1000 of the stream.
    bad_server(&path, usize::MAX, |at, chunk| {
        if (at..at + chunk.len()).contains(&1000) {
            chunk[1000 - at] ^= 0x01;
        }
    });
    let out = load(&["-s", "64", "-n", "1000", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("uds-reactor load: verification error"),
        "{err}"
    );
    // Byte 1000 of the stream is byte 40 of message 15.
    assert!(err.contains("message 15, byte 40"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_server_that_hangs_up_early_is_reported() {
    let dir = TempDir::new("load-hangup");
    let path = dir.path("cut.sock");
    bad_server(&path, 640, |_, _| {});
    let out = load(&["-s", "64", "-n", "1000", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("closed by the server after 10 echoes"),
        "{err}"
    );
}

#[test]
fn a_silent_server_is_a_stall_not_a_hang() {
    let dir = TempDir::new("load-stall");
    let path = dir.path("mute.sock");
    bad_server(&path, 0, |_, _| {});
    let out = load(&["--timeout", "0.3", "-n", "10", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("stalled"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn connect_failures_and_usage_errors() {
    let dir = TempDir::new("load-errors");
    let path = dir.path("nobody.sock");
    let p = path.to_str().unwrap();
    let out = load(&["-n", "10", p]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with(&format!("uds-reactor load: connect {p}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let cases: &[&[&str]] = &[
        &["--churn", "--type", "dgram", p],
        &["--type", "seqpacket", "--framing", "line", p],
        &["-c", "0", p],
        &["-n", "5", "-d", "1", p],
        &["-s", "0", p],
        &["--nope", p],
    ];
    for args in cases {
        let out = load(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).contains("error:"), "{args:?}");
    }
}
