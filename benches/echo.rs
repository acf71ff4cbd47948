//! End-to-end echo benchmark: uds-reactor against three peers, on the
//! same workloads, in one run.
//!
//! The servers, each a child process (so /proc/PID/stat and VmRSS are its
//! own):
//!
//! - `uds-reactor`: the release binary, default flags;
//! - `tokio-ct`: tokio `current_thread`, a task per connection, 64 KiB
//!   buffer each (benches/peers/tokio_ct.rs);
//! - `std-threads`: a thread per connection, blocking std sockets
//!   (benches/peers/threads.rs);
//! - `raw-epoll`: level-triggered epoll on libc, one shared 64 KiB buffer
//!   (uds-reactor's read size), bytes kept only after a short write — what
//!   one thread can do at best (benches/peers/epoll.rs).
//!
//! The load generator (`uds-reactor load --json`, the same built binary,
//! verifying every echoed byte) runs as a child process for each run
//! (benches/echo/load.rs). On two or more CPUs the servers are pinned to
//! CPU 0, and the load generator (and this process, which holds the idle
//! connections) to CPU 1. The workloads, run for each
//! server in turn (the order rotating each repetition), several times:
//!
//! | name | what |
//! |---|---|
//! | ping-pong 1 | 1 connection, 64-byte messages, pipeline 1 |
//! | ping-pong 100 | 100 connections, 64-byte messages, pipeline 1 |
//! | stream 1 | 1 connection, 64 KiB messages, 4 in flight |
//! | stream 100 | 100 connections, 16 KiB messages, 4 in flight each |
//! | churn | 8 connections at once, each: connect, one 64-byte echo, close |
//! | idle 10k | RSS growth with 10,000 idle connections (each echoed 1 byte), on a fresh server process |
//!
//! Reported per workload and server: throughput, latency p50/p99 (from
//! the load generator), the server's own CPU time (utime + stime) per
//! message, per GB or per connection, and the ratios of throughput and CPU
//! to tokio's and raw-epoll's in the same repetition, as medians with
//! min–max over the repetitions. The table at the end is markdown.
//!
//! ```text
//! cargo bench --bench echo                        # 8 repetitions of 1.2 s (about 4 minutes)
//! UDSR_BENCH_QUICK=1 cargo bench --bench echo     # 1 repetition of 0.5 s
//! UDSR_BENCH_REPS=3 UDSR_BENCH_SECS=1 UDSR_BENCH_ONLY=ping cargo bench --bench echo
//! ```
//!
//! `UDSR_BENCH_ONLY` keeps the workloads whose name contains it;
//! `UDSR_BENCH_SERVERS` (comma-separated) the servers named (tokio-ct and
//! raw-epoll always run: the ratios need them). `UDSR_BENCH_BASELINE=PATH`
//! adds another uds-reactor binary as `uds-reactor-base`, to measure a
//! change against the build before it in the same run.

#[path = "echo/load.rs"]
mod load;
mod peers;
#[path = "echo/procs.rs"]
#[allow(dead_code)] // ReactorWith is the fds bench's
mod procs;
#[path = "echo/table.rs"]
mod table;

use std::time::Instant;

use procs::{Kind, Server, TempDir};
use table::{Results, Sample, Unit};

/// The servers, in table order; tokio and raw-epoll are the baselines.
const SERVERS: [(&str, Kind); 4] = [
    ("uds-reactor", Kind::Reactor),
    ("tokio-ct", Kind::Peer("tokio-ct")),
    ("std-threads", Kind::Peer("std-threads")),
    ("raw-epoll", Kind::Peer("raw-epoll")),
];
/// Idle connections opened for the RSS workload.
const IDLE: usize = 10_000;
/// Repetitions of the RSS workload: it varies little (a byte or two per
/// connection) and costs the most time (10,000 threads to start).
const RSS_REPS: usize = 3;

/// One workload.
struct Workload {
    name: &'static str,
    unit: Unit,
    connections: usize,
    size: usize,
    pipeline: usize,
    churn: bool,
}

const WORKLOADS: [Workload; 6] = [
    Workload::load("ping-pong 1", Unit::Messages, 1, 64, 1),
    Workload::load("ping-pong 100", Unit::Messages, 100, 64, 1),
    Workload::load("stream 1", Unit::Bytes, 1, 64 << 10, 4),
    Workload::load("stream 100", Unit::Bytes, 100, 16 << 10, 4),
    Workload {
        churn: true,
        ..Workload::load("churn", Unit::Connections, 8, 64, 1)
    },
    Workload {
        connections: IDLE,
        ..Workload::load("idle 10k", Unit::Rss, 0, 0, 0)
    },
];

impl Workload {
    const fn load(
        name: &'static str,
        unit: Unit,
        connections: usize,
        size: usize,
        pipeline: usize,
    ) -> Workload {
        Workload {
            name,
            unit,
            connections,
            size,
            pipeline,
            churn: false,
        }
    }
}

/// Run settings, from the environment.
struct Settings {
    reps: usize,
    secs: f64,
    only: Option<String>,
    servers: Option<Vec<String>>,
}

impl Settings {
    fn from_env() -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let quick = var("UDSR_BENCH_QUICK").is_some_and(|v| v != "0");
        let (reps, secs): (usize, f64) = if quick { (1, 0.5) } else { (8, 1.2) };
        Settings {
            reps: var("UDSR_BENCH_REPS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(reps)
                .clamp(1, 20),
            secs: var("UDSR_BENCH_SECS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(secs)
                .clamp(0.1, 30.0),
            only: var("UDSR_BENCH_ONLY"),
            servers: var("UDSR_BENCH_SERVERS").map(|v| v.split(',').map(str::to_owned).collect()),
        }
    }
}

fn main() {
    peers::serve_if_asked();
    // `cargo bench` passes `--bench`; other arguments are ignored.
    let settings = Settings::from_env();
    // The idle workload holds IDLE descriptors here (and in the server).
    let nofile = uds_reactor::raise_open_file_limit().unwrap_or(1024);
    let idle = IDLE.min(nofile.saturating_sub(64) as usize);
    if idle < IDLE {
        println!(
            "open-file limit {nofile}: the idle workload opens {idle} connections, not {IDLE}"
        );
    }
    let (server_cpu, load_cpu) = procs::placement();
    let dir = TempDir::new("echo");
    let chosen = chosen_servers(&settings);
    let workloads: Vec<&Workload> = WORKLOADS
        .iter()
        .filter(|w| {
            let only = settings.only.as_deref();
            only.is_none_or(|o| w.name.contains(o))
        })
        .collect();
    eprintln!(
        "echo bench: {} repetitions of {} s; {} (and peers) on CPU {:?}, load generator on CPU {:?}",
        settings.reps,
        settings.secs,
        env!("CARGO_BIN_EXE_uds-reactor"),
        server_cpu,
        load_cpu
    );
    let mut servers: Vec<Server> = chosen
        .iter()
        .map(|&(name, kind)| {
            Server::start(name, kind, dir.join(&format!("{name}.sock")), server_cpu)
        })
        .collect();
    for s in &servers {
        // Fault in code and buffers before anything is measured.
        let _ = measure(s, &WORKLOADS[3], 0.2, load_cpu);
    }

    // Other work on the machine skews everything: say how much there was.
    let load_start = loadavg();
    let started = Instant::now();
    // samples[workload][server][rep]
    let mut samples = vec![vec![Vec::new(); servers.len()]; workloads.len()];
    for rep in 0..settings.reps {
        for (wi, w) in workloads.iter().enumerate() {
            if w.unit == Unit::Rss && rep >= RSS_REPS {
                continue;
            }
            // Interleaved: every server in turn, the order rotating.
            for k in 0..servers.len() {
                let si = (k + rep) % servers.len();
                let sample = if w.unit == Unit::Rss {
                    // A fresh process: one that served before keeps its
                    // grown tables and freed memory, and would show no growth.
                    let (name, kind) = chosen[si];
                    let path = dir.join(&format!("{name}-idle.sock"));
                    let fresh = Server::start(name, kind, path, server_cpu);
                    let sample = measure_rss(&fresh, idle);
                    fresh.stop();
                    sample
                } else if servers[si].alive() {
                    measure(&servers[si], w, settings.secs, load_cpu)
                } else {
                    None
                };
                progress(started, rep, w, chosen[si].0, sample.as_ref());
                samples[wi][si].push(sample);
            }
        }
    }

    let names: Vec<&'static str> = chosen.iter().map(|(n, _)| *n).collect();
    println!();
    println!(
        "{} repetitions of {} s each, in {:.0} s; medians, (min–max) over repetitions.",
        settings.reps,
        settings.secs,
        started.elapsed().as_secs_f64()
    );
    println!("CPU = the server process's utime + stime; ratios taken per repetition.");
    println!("load average at start: {load_start}; at end: {}", loadavg());
    println!();
    print!("{}", table_of(&workloads, &names, &samples));
    for s in servers {
        s.stop();
    }
}

/// The servers to run: all, or those in `UDSR_BENCH_SERVERS` plus the
/// baselines, plus `UDSR_BENCH_BASELINE`'s binary if set.
fn chosen_servers(settings: &Settings) -> Vec<(&'static str, Kind)> {
    let baseline =
        std::env::var_os("UDSR_BENCH_BASELINE").map(|_| ("uds-reactor-base", Kind::Baseline));
    SERVERS
        .iter()
        .copied()
        .chain(baseline)
        .filter(|(name, _)| {
            let keep = |list: &Vec<String>| list.iter().any(|n| n == name);
            // The baselines always run: the ratios need them.
            matches!(*name, "tokio-ct" | "raw-epoll" | "uds-reactor-base")
                || settings.servers.as_ref().is_none_or(keep)
        })
        .collect()
}

/// One line on stderr per run.
fn progress(started: Instant, rep: usize, w: &Workload, server: &str, sample: Option<&Sample>) {
    let t = started.elapsed().as_secs_f64();
    match sample {
        Some(x) => eprintln!(
            "[{t:>5.1}s] rep {} {:<13} {:<16} rate {:>10} p50 {:>7.1} µs p99 {:>7.1} µs cpu {}",
            rep + 1,
            w.name,
            server,
            table::num(x.rate),
            x.p50_us,
            x.p99_us,
            table::num(x.cpu),
        ),
        None => eprintln!("[{t:>5.1}s] rep {} {} {server}: failed", rep + 1, w.name),
    }
}

/// The markdown table: `samples[workload][server][rep]`.
fn table_of(
    workloads: &[&Workload],
    names: &[&'static str],
    samples: &[Vec<Vec<Option<Sample>>>],
) -> String {
    let tokio = names.iter().position(|&n| n == "tokio-ct").unwrap_or(0);
    let epoll = names.iter().position(|&n| n == "raw-epoll").unwrap_or(0);
    let mut out = String::from(table::HEADER);
    for (w, samples) in workloads.iter().zip(samples) {
        Results {
            workload: w.name,
            unit: w.unit,
            servers: names,
            samples,
        }
        .rows(&mut out, tokio, epoll);
    }
    out
}

/// Runs `w` against `server` for `secs`, the load generator on
/// `load_cpu`; None if the run failed.
fn measure(server: &Server, w: &Workload, secs: f64, load_cpu: Option<usize>) -> Option<Sample> {
    if w.unit == Unit::Rss {
        return measure_rss(server, w.connections);
    }
    let run = load::Run {
        path: &server.path,
        connections: w.connections,
        size: w.size,
        pipeline: w.pipeline,
        churn: w.churn,
        secs,
        fds: 0,
    };
    let cpu_before = server.cpu();
    let report = match load::run(&run, load_cpu) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{} {}: {e}", w.name, server.name);
            return None;
        }
    };
    let cpu = (server.cpu() - cpu_before).as_secs_f64();
    let (rate, per) = match w.unit {
        Unit::Messages => (report.msgs_per_sec, cpu * 1e6 / report.messages),
        Unit::Bytes => (report.mb_per_sec, cpu / (report.bytes / 1e9)),
        Unit::Connections => (report.conns_per_sec, cpu * 1e6 / report.connections_opened),
        Unit::Rss => unreachable!("measured by measure_rss"),
    };
    Some(Sample {
        rate,
        p50_us: report.p50_us,
        p99_us: report.p99_us,
        cpu: per,
    })
}

/// Server RSS growth per connection with `n` idle connections, on a
/// server that has served nothing else.
fn measure_rss(server: &Server, n: usize) -> Option<Sample> {
    // Touch the echo path first, so the baseline is not missing its pages.
    let _ = procs::open_idle(&server.path, 1);
    let before = server.rss();
    let idle = match procs::open_idle(&server.path, n) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("idle {}: {e}", server.name);
            return None;
        }
    };
    let after = server.rss();
    drop(idle);
    Some(Sample {
        rate: after.saturating_sub(before) as f64 / n as f64,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        cpu: f64::NAN,
    })
}

/// The 1-minute load average, from /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
