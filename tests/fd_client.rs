//! Descriptor passing from the client and the load generator, against the
//! real server with `--max-fds`: `client --send-fd` and its `fd N ->
//! TARGET` report, `load --fds K` on every socket type, a server that
//! drops descriptors caught, and no descriptor left open anywhere.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::{bin, open_fds, Proc, TempDir, PATIENCE};

/// Runs `uds-reactor SUBCOMMAND ARGS` with `input` on stdin to completion
/// (at most PATIENCE).
fn run(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input); // it may exit first
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{args:?} did not finish");
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A server passing descriptors back (`--max-fds 8`) with `args`, and its
/// descriptor count once listening.
fn fd_server(args: &[&str]) -> (Proc, usize) {
    let mut all = vec!["--max-fds", "8"];
    all.extend_from_slice(args);
    let server = Proc::serve(&all);
    let baseline = open_fds(server.pid());
    (server, baseline)
}

/// Stops the server cleanly and returns its final counters line.
fn final_stats(server: &mut Proc) -> String {
    assert!(server.stop().success(), "log:\n{}", server.log_text());
    server.wait_for(" bytes_in=")
}

/// The `fd N -> TARGET` lines of a client's stderr, as `(N, TARGET)`.
fn reports(stderr: &str) -> Vec<(i32, String)> {
    stderr
        .lines()
        .filter_map(|l| {
            let (n, target) = l.strip_prefix("fd ")?.split_once(" -> ")?;
            Some((n.parse().ok()?, target.to_owned()))
        })
        .collect()
}

/// Every socket type, with the framings that change how a stream client
/// sends (one write of bytes, or frames).
const KINDS: &[(&str, &str)] = &[
    ("stream", "raw"),
    ("stream", "line"),
    ("stream", "length"),
    ("seqpacket", "raw"),
    ("dgram", "raw"),
];

#[test]
fn client_sends_files_and_reports_each_that_comes_back() {
    let dir = TempDir::new("fdc-client");
    let (one, two) = (dir.path("one.txt"), dir.path("two.txt"));
    std::fs::write(&one, b"1").expect("write");
    std::fs::write(&two, b"2").expect("write");
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    for &(ty, framing) in KINDS {
        let path = dir.path(&format!("{ty}-{framing}.sock"));
        let p = path.to_str().unwrap();
        let (mut server, baseline) = fd_server(&["--type", ty, "--framing", framing, p]);
        let mut args = vec!["client", "--type", ty, "--send-fd", one, "--send-fd", two];
        if ty == "stream" {
            args.extend(["--framing", framing]);
        }
        args.push(p);
        let o = run(&args, b"hello\nworld\n");
        let what = format!("{ty}/{framing}");
        let stderr = text(&o.stderr);
        assert!(o.status.success(), "{what}: {stderr}");
        assert_eq!(text(&o.stdout), "hello\nworld\n", "{what}");
        // Both come back, in order, with the first echo; nothing else is
        // said. Each is closed once reported, so they are distinct.
        let got = reports(&stderr);
        let targets: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(targets, [one, two], "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 2, "{what}: {stderr}");
        assert_ne!(got[0].0, got[1].0, "{what}");
        server.fds_back_to(baseline);
        let stats = final_stats(&mut server);
        assert!(
            stats.contains(" fds_in=2") && stats.contains(" fds_out=2"),
            "{what}: {stats}"
        );
    }
}

#[test]
fn client_reports_descriptors_of_any_kind() {
    // A directory, a device and the socket file itself: TARGET is what
    // /proc shows for each.
    let dir = TempDir::new("fdc-kinds");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let (mut server, baseline) = fd_server(&["--type", "seqpacket", p]);
    let d = dir.0.to_str().unwrap();
    let args = [
        "client",
        "--type",
        "seqpacket",
        "--send-fd",
        d,
        "--send-fd",
        "/dev/null",
        p,
    ];
    let o = run(&args, b"x\n");
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    let targets: Vec<String> = reports(&stderr).into_iter().map(|(_, t)| t).collect();
    assert_eq!(targets, [d, "/dev/null"], "{stderr}");
    server.fds_back_to(baseline);
    assert!(final_stats(&mut server).contains(" fds_out=2"));
}

#[test]
fn client_send_fd_errors_are_one_line() {
    let dir = TempDir::new("fdc-errors");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let (mut server, baseline) = fd_server(&[p]);
    let missing = dir.path("missing");
    let m = missing.to_str().unwrap();
    // A file that cannot be opened fails before connecting, naming it.
    let o = run(&["client", "--send-fd", m, p], b"x\n");
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(m) && stderr.contains("No such file"),
        "{stderr}"
    );
    // No input: no message could carry the descriptors, and it says so.
    let o = run(&["client", "--send-fd", "/dev/null", p], b"");
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--send-fd"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    server.fds_back_to(baseline);
    let stats = final_stats(&mut server);
    assert!(stats.contains(" fds_in=0"), "{stats}");
}

#[test]
fn client_of_a_server_without_max_fds_gets_none_back() {
    // The default --max-fds 0: the kernel closes what the client sent,
    // the bytes are echoed, and no descriptor is reported.
    let dir = TempDir::new("fdc-none");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let mut server = Proc::serve(&[p]);
    let o = run(&["client", "--send-fd", "/dev/null", p], b"plain\n");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "plain\n");
    assert_eq!(text(&o.stderr), "");
    assert!(server.stop().success());
}

/// The number after `"key":` in a flat-enough JSON text.
fn field(json: &str, key: &str) -> u64 {
    let at = json
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {json}"));
    let rest = &json[at + key.len() + 3..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end]
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{key} not a whole number in {json}"))
}

#[test]
fn load_passes_descriptors_on_every_type_and_checks_them() {
    let dir = TempDir::new("fdc-load");
    for &(ty, framing) in KINDS {
        let path = dir.path(&format!("{ty}-{framing}.sock"));
        let p = path.to_str().unwrap();
        let (mut server, baseline) = fd_server(&["--type", ty, "--framing", framing, p]);
        // Pipelined, so a stream's echoes carry descriptors mid-window.
        let mut args = vec!["load", "--type", ty, "--fds", "3", "-n", "600"];
        args.extend(["-c", "2", "-P", "4", "--json"]);
        if ty == "stream" {
            args.extend(["--framing", framing]);
        }
        args.push(p);
        let o = run(&args, b"");
        let what = format!("{ty}/{framing}");
        assert!(o.status.success(), "{what}: {}", text(&o.stderr));
        let json = text(&o.stdout);
        assert_eq!(field(&json, "messages"), 600, "{what}: {json}");
        assert_eq!(field(&json, "fds"), 1800, "{what}: {json}");
        assert_eq!(field(&json, "fds_per_msg"), 3, "{what}: {json}");
        assert_eq!(field(&json, "errors"), 0, "{what}: {json}");
        server.fds_back_to(baseline);
        let stats = final_stats(&mut server);
        assert!(
            stats.contains(" fds_in=1800") && stats.contains(" fds_out=1800"),
            "{what}: {stats}"
        );
    }
}

#[test]
fn load_with_descriptors_churns_and_summarises() {
    let dir = TempDir::new("fdc-churn");
    let path = dir.path("s.sock");
    let p = path.to_str().unwrap();
    let (mut server, baseline) = fd_server(&[p]);
    let o = run(&["load", "--churn", "--fds", "2", "-n", "200", p], b"");
    let summary = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(summary.contains("2 descriptors per message"), "{summary}");
    assert!(summary.contains("descriptors 400 back"), "{summary}");
    assert!(summary.contains("fds/s"), "{summary}");
    server.fds_back_to(baseline);
    assert!(final_stats(&mut server).contains(" fds_out=400"));
}

#[test]
fn load_catches_descriptors_that_do_not_come_back() {
    // A server without --max-fds echoes the bytes only: the first echo
    // is a verification error, on a stream and on a message socket.
    let dir = TempDir::new("fdc-missing");
    for ty in ["stream", "seqpacket"] {
        let path = dir.path(&format!("{ty}.sock"));
        let p = path.to_str().unwrap();
        let mut server = Proc::serve(&["--type", ty, p]);
        let o = run(&["load", "--type", ty, "--fds", "1", "-n", "10", p], b"");
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{ty}: {stderr}");
        assert!(
            stderr.contains("verification error") && stderr.contains("descriptors"),
            "{ty}: {stderr}"
        );
        assert!(server.stop().success());
    }
}

#[test]
fn load_fds_over_the_kernel_limit_is_a_usage_error() {
    let o = run(&["load", "--fds", "254", "/nonexistent.sock"], b"");
    let stderr = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--fds 254"), "{stderr}");
}
