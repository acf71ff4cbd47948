//! Idle connections: what each costs the server in memory, and whether
//! the cost of one event stays flat as they pile up.
//!
//! Starts the release binary, opens 1,000, 10,000 and 100,000 connections
//! (each echoes one byte, then stays idle; the last level is capped by the
//! open-file hard limit), and at each level reports the server's RSS per
//! connection and the median and 99th-percentile time of one 64-byte echo
//! round trip on a separate connection. It runs twice: without timers and
//! with `--idle-timeout` (a deadline per connection in the timer heap).
//!
//! 100,000 connections need more than 100,000 descriptors in each of the
//! two processes. When it may (root with CAP_SYS_RESOURCE), the bench
//! raises its own hard limit to 250,000 (`fs.nr_open` permitting) with
//! `prlimit`, and the server inherits it; either way it prints the limit
//! it got.
//!
//! ```text
//! cargo bench --bench idle
//! ```

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Connection counts to reach, in order.
const LEVELS: [usize; 3] = [1_000, 10_000, 100_000];
/// Echo round trips timed at each level (after a warm-up).
const ROUND_TRIPS: usize = 5_000;
/// Descriptors the server keeps back from its connection limit
/// (`FD_RESERVE` in src/server.rs), plus a margin.
const SERVER_RESERVE: u64 = 40;
/// Descriptors this process keeps for itself (std, the timed connection).
const OWN_RESERVE: u64 = 32;
/// The hard open-file limit asked for when running as root: room for the
/// largest level plus reserves, on both sides.
const WANTED_LIMIT: u64 = 250_000;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    raise_hard_limit();
    let own_limit = uds_reactor::raise_open_file_limit().expect("getrlimit");
    let dir = std::env::temp_dir().join(format!("udsr-bench-idle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");

    println!("open-file limit of this process (soft = hard): {own_limit}");
    for extra in [&[][..], &["--idle-timeout", "3600"][..]] {
        run(&dir, own_limit, extra);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// As root, raises this process's hard open-file limit to [`WANTED_LIMIT`]
/// (or `fs.nr_open`, if lower) with `prlimit`, so the 100,000 level can be
/// reached; the server, our child, inherits it. Otherwise says why not.
fn raise_hard_limit() {
    let hard = hard_nofile_limit();
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(WANTED_LIMIT);
    let want = WANTED_LIMIT.min(nr_open);
    if hard >= want {
        return;
    }
    // Raising a hard limit takes CAP_SYS_RESOURCE (bit 24), which root
    // has outside containers that drop it.
    let can_raise = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|caps| u64::from_str_radix(caps.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0);
    if !can_raise {
        println!(
            "hard open-file limit {hard}, not raised to {want}: this process lacks \
             CAP_SYS_RESOURCE (root in a container that drops it, or not root)"
        );
        return;
    }
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:{want}"))
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("hard open-file limit raised from {hard} to {want} (prlimit)")
        }
        other => println!("hard open-file limit {hard}: raising it to {want} failed ({other:?})"),
    }
}

/// This process's hard open-file limit: the second number on the "Max
/// open files" line of /proc/self/limits (`proc_field` reads the first).
fn hard_nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One server, all levels.
fn run(dir: &Path, own_limit: u64, extra: &[&str]) {
    let path = dir.join("idle.sock");
    let mut server = Server::start(&path, extra);
    let server_limit = open_file_limit(server.pid());
    let cap = (server_limit.saturating_sub(SERVER_RESERVE))
        .min(own_limit.saturating_sub(OWN_RESERVE)) as usize;

    let mut timed = connect(&path);
    // Touch the server's scratch buffer and the code paths before the
    // baseline, so the baseline is not missing pages every echo needs.
    echo(&mut timed, &vec![7; 64 << 10]);
    let base_rss = rss_kib(server.pid());
    println!();
    println!(
        "server flags: {} (its open-file limit {server_limit}); baseline RSS {base_rss} KiB",
        if extra.is_empty() {
            "defaults".to_string()
        } else {
            extra.join(" ")
        }
    );
    println!(
        "| idle connections | server RSS | RSS per idle connection | echo median | echo p99 |"
    );
    println!("|---:|---:|---:|---:|---:|");

    let mut idle: Vec<UnixStream> = Vec::new();
    for level in LEVELS {
        let target = level.min(cap);
        let opened = Instant::now();
        while idle.len() < target {
            let mut s = connect(&path);
            echo(&mut s, b"x");
            idle.push(s);
        }
        let open_time = opened.elapsed();
        let rss = rss_kib(server.pid());
        let per_conn = (rss.saturating_sub(base_rss) as f64 * 1024.0) / idle.len() as f64;
        let (median, p99) = round_trips(&mut timed);
        let label = if target < level {
            format!("{target} (asked {level}: capped by the open-file limit)")
        } else {
            target.to_string()
        };
        println!(
            "| {label} | {rss} KiB | {per_conn:.0} B | {:.1} µs | {:.1} µs |",
            micros(median),
            micros(p99)
        );
        eprintln!("  ({} connections opened in {open_time:.2?})", idle.len());
        if target < level {
            break;
        }
    }
    drop(idle);
    drop(timed);
    server.stop();
}

/// Median and 99th percentile of [`ROUND_TRIPS`] 64-byte echoes.
fn round_trips(s: &mut UnixStream) -> (Duration, Duration) {
    let msg = [42u8; 64];
    for _ in 0..200 {
        echo(s, &msg);
    }
    let mut times: Vec<Duration> = (0..ROUND_TRIPS)
        .map(|_| {
            let start = Instant::now();
            echo(s, &msg);
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[times.len() / 2], times[times.len() * 99 / 100])
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

fn echo(s: &mut UnixStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("read echo");
    assert_eq!(got, msg, "echo mismatch");
}

/// The release binary, killed on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(path: &PathBuf, extra: &[&str]) -> Server {
        let child = Command::new(env!("CARGO_BIN_EXE_uds-reactor"))
            .arg(path)
            .args(["--log-level", "warn"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start uds-reactor");
        let server = Server { child };
        // Ready once a connection succeeds.
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(path).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait, so the socket file is removed.
    fn stop(&mut self) {
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The soft open-file limit of a process, from /proc/PID/limits.
fn open_file_limit(pid: u32) -> u64 {
    proc_field(&format!("/proc/{pid}/limits"), "Max open files")
}

/// The first number after `key` on its line in a /proc file.
fn proc_field(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
