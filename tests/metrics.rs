//! `--metrics` against the real binary: `GET /metrics` over the second
//! socket gives the SIGUSR1 line's counters in the Prometheus text format;
//! other requests get 404/405/400; a stalled client is dropped on its
//! deadline without delaying the echo; the socket file follows the main
//! one's rules; `@name` works. With curl and Python's `prometheus_client`
//! installed, they read it too (skipped, saying so, where they are not).

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{exists, stat, under_umask, Proc, TempDir, PATIENCE};

/// Sends `request` as is and reads the whole response (to EOF; a reset
/// after the response, when the server closed with input unread, ends it
/// as well).
fn exchange(mut s: UnixStream, request: &[u8]) -> String {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read the response: {e}"),
        }
    }
    String::from_utf8(got).expect("a text response")
}

fn get(path: &Path, target: &str) -> String {
    let s = UnixStream::connect(path).expect("connect to the metrics socket");
    exchange(
        s,
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

/// The status line's code.
fn code(response: &str) -> u16 {
    let line = response.lines().next().unwrap_or_default();
    assert!(line.starts_with("HTTP/1.1 "), "{response:?}");
    line[9..12].parse().unwrap()
}

fn split(response: &str) -> (&str, &str) {
    response.split_once("\r\n\r\n").expect("head and body")
}

/// `name value` lines of an exposition, checked for their `# HELP` and
/// `# TYPE` lines on the way.
fn samples(body: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let lines: Vec<&str> = body.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with('#') {
            continue;
        }
        let (name, value) = l.split_once(' ').expect("name value");
        assert!(i >= 2, "{name} without its HELP and TYPE");
        assert!(
            lines[i - 2].starts_with(&format!("# HELP {name} ")),
            "{body}"
        );
        let kind = if name == "uds_reactor_open_connections" {
            "gauge"
        } else {
            assert!(name.ends_with("_total"), "{name}");
            "counter"
        };
        assert_eq!(lines[i - 1], format!("# TYPE {name} {kind}"));
        let fresh = out.insert(name.to_owned(), value.parse().expect("a number"));
        assert!(fresh.is_none(), "{name} twice");
    }
    out
}

fn echo(path: &Path, data: &[u8]) -> UnixStream {
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(data).unwrap();
    let mut got = vec![0; data.len()];
    s.read_exact(&mut got).expect("echo");
    assert_eq!(got, data);
    s
}

/// A server on `s.sock` with its metrics on `m.sock`.
fn serve(dir: &TempDir, extra: &[&str]) -> Proc {
    let main = dir.path("s.sock");
    let metrics = dir.path("m.sock");
    let mut args = vec![
        main.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn(&args);
    p.wait_for("metrics on");
    p
}

#[test]
fn the_counters_of_the_stats_line_after_echo_traffic() {
    let dir = TempDir::new("metrics");
    let mut server = serve(&dir, &["--framing", "line"]);
    let main = dir.path("s.sock");
    let kept = echo(&main, b"one\ntwo\n");
    drop(echo(&main, b"three\n"));
    // The closed one counted: metrics and SIGUSR1 then agree on `closed`.
    let deadline = Instant::now() + PATIENCE;
    while stat(&server.stats(), "closed") < 1 {
        assert!(Instant::now() < deadline, "the second client never closed");
    }

    let response = get(&dir.path("m.sock"), "/metrics");
    let line = server.stats();
    assert_eq!(code(&response), 200, "{response}");
    let (head, body) = split(&response);
    assert!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close"), "{head}");
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())),
        "{head}"
    );
    let samples = samples(body);
    let keys: Vec<&str> = line
        .split_once("stats ")
        .unwrap()
        .1
        .split(' ')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(samples.len(), keys.len(), "{body}");
    for key in keys {
        let name = match key {
            "open" => "uds_reactor_open_connections".to_owned(),
            k => format!("uds_reactor_{k}_total"),
        };
        assert_eq!(samples[&name], stat(&line, key), "{name} against {line}");
    }
    assert_eq!(samples["uds_reactor_open_connections"], 1);
    assert_eq!(samples["uds_reactor_frames_in_total"], 3);
    assert_eq!(samples["uds_reactor_bytes_out_total"], 14);
    drop(kept);
    assert!(server.stop().success());
}

#[test]
fn other_paths_methods_and_bad_requests() {
    let dir = TempDir::new("metrics-errors");
    let mut server = serve(&dir, &[]);
    let m = dir.path("m.sock");
    assert_eq!(code(&get(&m, "/")), 404);
    assert_eq!(code(&get(&m, "/metrics/x")), 404);
    let post = exchange(
        UnixStream::connect(&m).unwrap(),
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(code(&post), 405);
    assert!(post.contains("\r\nAllow: GET\r\n"), "{post}");
    let garbage = exchange(
        UnixStream::connect(&m).unwrap(),
        b"\x16\x03\x01 hello\r\n\r\n",
    );
    assert_eq!(code(&garbage), 400);
    // A request cut short by the client's EOF.
    let mut s = UnixStream::connect(&m).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(code(&exchange(s, b"")), 400);
    // Over 8 KiB of headers, never finished.
    let mut big = b"GET /metrics HTTP/1.1\r\nX-Filler: ".to_vec();
    big.resize(9 * 1024, b'a');
    assert_eq!(code(&exchange(UnixStream::connect(&m).unwrap(), &big)), 400);
    // And it still answers.
    assert_eq!(code(&get(&m, "/metrics")), 200);
    assert!(server.stop().success());
}

#[test]
fn a_stalled_client_delays_no_echo_and_is_dropped_on_its_deadline() {
    let dir = TempDir::new("metrics-stalled");
    let mut server = serve(&dir, &["--idle-timeout", "1"]);
    let started = Instant::now();
    let mut silent = UnixStream::connect(dir.path("m.sock")).unwrap();
    let mut partial = UnixStream::connect(dir.path("m.sock")).unwrap();
    partial.write_all(b"GET /metr").unwrap();

    let t = Instant::now();
    drop(echo(&dir.path("s.sock"), b"meanwhile"));
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "echo took {:?} beside stalled metrics clients",
        t.elapsed()
    );
    for s in [&mut silent, &mut partial] {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0; 64];
        let n = s.read(&mut buf).expect("EOF, not a timeout");
        assert_eq!(n, 0, "a stalled client gets no response");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "dropped after {waited:?}, not after --idle-timeout 1"
    );
    assert!(server.stop().success());
}

#[test]
fn the_socket_file_has_the_mode_and_goes_at_shutdown() {
    let dir = TempDir::new("metrics-file");
    let (main, metrics) = (dir.path("s.sock"), dir.path("m.sock"));
    // A stale socket at the metrics path is replaced.
    drop(UnixListener::bind(&metrics).unwrap());
    let mut cmd = under_umask(
        "077",
        &[
            main.to_str().unwrap(),
            "--metrics",
            metrics.to_str().unwrap(),
            "--mode",
            "660",
        ],
    );
    let mut server = Proc::spawn_cmd(&mut cmd);
    server.wait_for("metrics on");
    let mode = std::fs::metadata(&metrics).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "metrics socket mode {mode:o}");
    assert_eq!(code(&get(&metrics, "/metrics")), 200);

    // A live one is refused, and left serving.
    let other = dir.path("t.sock");
    let (status, log) = common::run_to_exit(Command::new(common::bin()).args([
        other.to_str().unwrap(),
        "--metrics",
        metrics.to_str().unwrap(),
    ]));
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains(metrics.to_str().unwrap()), "{log}");
    assert!(
        !exists(&other),
        "the refused server left its main socket behind"
    );
    assert_eq!(code(&get(&metrics, "/metrics")), 200);

    assert!(server.stop().success());
    assert!(
        !exists(&metrics),
        "the metrics socket file is removed at shutdown"
    );
    assert!(!exists(&main));
}

#[test]
fn a_metrics_file_no_longer_ours_is_left_alone() {
    let dir = TempDir::new("metrics-replaced");
    let mut server = serve(&dir, &[]);
    let metrics = dir.path("m.sock");
    std::fs::remove_file(&metrics).unwrap();
    let newer = UnixListener::bind(&metrics).unwrap();
    assert!(server.stop().success());
    assert!(exists(&metrics), "removed another server's socket");
    drop(newer);
}

#[test]
fn an_abstract_metrics_address() {
    let dir = TempDir::new("metrics-abstract");
    let name = format!("udsr-metrics-{}", std::process::id());
    let main = dir.path("s.sock");
    let at = format!("@{name}");
    let mut server = Proc::spawn(&[main.to_str().unwrap(), "--metrics", &at]);
    server.wait_for(&format!("metrics on {at}"));
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let s = UnixStream::connect_addr(&addr).expect("connect to the abstract metrics socket");
    let response = exchange(s, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code(&response), 200);
    assert!(samples(split(&response).1).contains_key("uds_reactor_accepted_total"));
    assert!(server.stop().success());
}

/// Whether `tool` runs; if not, says why the test is skipped.
fn have(tool: &str, check: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(check)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: {tool} {} does not run here", check.join(" "));
    }
    ok
}

#[test]
fn curl_reads_it() {
    if !have("curl", &["--version"]) {
        return;
    }
    let dir = TempDir::new("metrics-curl");
    let mut server = serve(&dir, &[]);
    drop(echo(&dir.path("s.sock"), b"x"));
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--unix-socket"])
        .arg(dir.path("m.sock"))
        .arg("http://localhost/metrics")
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(samples(&body)["uds_reactor_bytes_in_total"] == 1, "{body}");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(dir.path("m.sock"))
        .arg("http://localhost/nope")
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    assert!(server.stop().success());
}

#[test]
fn prometheus_client_parses_it() {
    if !have("python3", &["-c", "import prometheus_client.parser"]) {
        println!("(pip install prometheus-client to run it)");
        return;
    }
    let dir = TempDir::new("metrics-prom");
    let mut server = serve(&dir, &[]);
    drop(echo(&dir.path("s.sock"), b"hello"));
    let body = split(&get(&dir.path("m.sock"), "/metrics")).1.to_owned();
    // The parser raises on anything outside the format; print what it read.
    const SCRIPT: &str = "\
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        print(f.type, s.name, int(s.value))
";
    let mut py = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    py.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        parsed.contains("gauge uds_reactor_open_connections 0\n"),
        "{parsed}"
    );
    assert!(
        parsed.contains("counter uds_reactor_bytes_in_total 5\n"),
        "{parsed}"
    );
    assert_eq!(parsed.lines().count(), samples(&body).len(), "{parsed}");
    assert!(server.stop().success());
}

#[test]
fn a_metrics_address_that_is_the_served_one_is_a_usage_error() {
    let dir = TempDir::new("metrics-same");
    let main = dir.path("s.sock");
    let main = main.to_str().unwrap();
    let (status, log) =
        common::run_to_exit(Command::new(common::bin()).args([main, "--metrics", main]));
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("--metrics"), "{log}");
    assert!(!exists(Path::new(main)));
    let (status, log) =
        common::run_to_exit(Command::new(common::bin()).args([main, "--metrics", ""]));
    assert_eq!(status.code(), Some(2), "{log}");
}
