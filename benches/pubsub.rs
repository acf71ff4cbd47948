//! Pub/sub fan-out benchmark: uds-reactor's pubsub example
//! (examples/pubsub.rs) against Redis, on the same workload, in one run.
//!
//! The workload: 1 publisher connection and 100 subscriber connections
//! on one topic, 64-byte payloads, all over Unix stream sockets in a
//! private temp dir. The publisher keeps at most 16 PUBs awaiting their
//! reply, and at most 256 messages not yet read by the slowest
//! subscriber (a PUB's reply says "queued", so this bounds the server's
//! buffers). One mio loop on this thread drives every connection
//! (benches/pubsub/driver.rs); only the codec differs between the
//! servers (benches/pubsub/codec.rs: `SUB`/`PUB`/`MSG` lines, or RESP
//! `SUBSCRIBE`/`PUBLISH`/`message`). Every PUB's reply must count all 100
//! subscribers, and every subscriber must get every message, in order
//! (the payload carries its sequence number), intact.
//!
//! The servers, each a child process pinned to CPU 0 (and the driver to
//! CPU 1) when there are two CPUs, are started and measured by
//! benches/echo/procs.rs (`pubsub --peer NAME PATH` execs the real
//! server, so the child's pid and /proc/PID/stat are the server's own):
//!
//! - `uds-reactor`: target/release/examples/pubsub, default flags, built
//!   first by `cargo build --release --example pubsub` (or the binary at
//!   `UDSR_BENCH_PUBSUB`, not rebuilt);
//! - `redis`: `redis-server --port 0 --unixsocket PATH --save ''
//!   --appendonly no`, from PATH. If it is missing the bench says so and
//!   runs without it (`UDSR_BENCH_INSTALL_REDIS=1` first tries
//!   `apt-get install -y redis-server`).
//!
//! Reported: delivered messages/s (publishes × subscribers, over the
//! time from the first PUB to the last message read), the server's CPU
//! (its runtime: schedstat if one thread, else utime + stime) in µs per
//! delivered message, how busy the server and
//! the driver were, and the ratios uds-reactor ÷ Redis per repetition;
//! medians with min–max over the repetitions, as a markdown table.
//!
//! ```text
//! cargo bench --bench pubsub                        # 3 repetitions of 2 s
//! UDSR_BENCH_QUICK=1 cargo bench --bench pubsub     # 1 repetition of 0.5 s
//! UDSR_BENCH_REPS=5 UDSR_BENCH_SECS=3 cargo bench --bench pubsub
//! UDSR_BENCH_PIPELINE=64 UDSR_BENCH_BACKLOG=1024 cargo bench --bench pubsub
//! ```

#[path = "pubsub/codec.rs"]
mod codec;
#[path = "pubsub/driver.rs"]
mod driver;
// Shared with the echo bench; not all of either is used here.
#[allow(dead_code)]
#[path = "echo/procs.rs"]
mod procs;
#[allow(dead_code)]
#[path = "echo/table.rs"]
mod table;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use codec::Proto;
use driver::{Config, Session};
use procs::{Kind, Server, TempDir};
use table::{cell, num, spread};

/// Subscriber connections.
const SUBSCRIBERS: usize = 100;
/// PUBs awaiting their reply, at most (`UDSR_BENCH_PIPELINE`).
const PIPELINE: u64 = 16;
/// Messages published but not yet read by the slowest subscriber, at
/// most (`UDSR_BENCH_BACKLOG`).
const BACKLOG: u64 = 256;
/// The workload's name in the table.
const WORKLOAD: &str = "fan-out 1→100, 64 B";
/// Each server's unmeasured first run.
const WARMUP_SECS: f64 = 0.3;
/// How long `cargo build --example pubsub` (or apt-get) may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// A server in the table: name, how procs.rs starts it, its protocol.
#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    kind: Kind,
    proto: Proto,
}

const REACTOR: Spec = Spec {
    name: "uds-reactor",
    kind: Kind::Peer("pubsub"),
    proto: Proto::Line,
};
const REDIS: Spec = Spec {
    name: "redis",
    kind: Kind::Peer("redis"),
    proto: Proto::Resp,
};

/// Run settings, from the environment.
struct Settings {
    reps: usize,
    secs: f64,
    pipeline: u64,
    backlog: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let (reps, secs) = procs::reps_and_secs((3, 2.0), (1, 0.5));
        Settings {
            reps,
            secs,
            pipeline: procs::setting_in("UDSR_BENCH_PIPELINE", PIPELINE, 1..=4096),
            backlog: procs::setting_in("UDSR_BENCH_BACKLOG", BACKLOG, 1..=1 << 16),
        }
    }
}

/// One measured run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Delivered messages per second.
    rate: f64,
    /// Server CPU µs per delivered message.
    cpu_us: f64,
    /// Server CPU time ÷ wall time.
    busy: f64,
    /// Driver thread CPU time ÷ wall time.
    driver_busy: f64,
    /// PUBs made (each delivered to every subscriber).
    published: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name, path] = &args[..] {
        if flag == "--peer" {
            exec_peer(name, Path::new(path));
        }
    }
    // `cargo bench` passes `--bench`; other arguments are ignored.
    codec::self_check();
    let settings = Settings::from_env();
    let load_start = loadavg();
    let (server_cpu, load_cpu) = procs::placement();
    let dir = TempDir::new("pubsub");

    let mut specs = Vec::new();
    match prepare_example() {
        Ok(bin) => {
            eprintln!("pubsub bench: uds-reactor is {}", bin.display());
            specs.push(REACTOR);
        }
        Err(e) => println!("note: uds-reactor's pubsub example skipped: {e}"),
    }
    match find_redis() {
        Ok(bin) => {
            eprintln!("pubsub bench: redis is {}", bin.display());
            specs.push(REDIS);
        }
        Err(e) => println!("note: Redis skipped: {e}"),
    }
    let mut servers: Vec<(Spec, Server)> = specs
        .iter()
        .filter_map(|&spec| Some((spec, start(spec, &dir, server_cpu)?)))
        .collect();
    eprintln!(
        "pubsub bench: {} repetitions of {} s; servers on CPU {server_cpu:?}, driver on CPU {load_cpu:?}",
        settings.reps, settings.secs
    );
    for (spec, server) in &mut servers {
        // Fault in code and buffers before anything is measured.
        let _ = measure(*spec, server, &settings, "warmup", WARMUP_SECS);
    }

    let started = Instant::now();
    // samples[server][rep]
    let mut samples: Vec<Vec<Option<Sample>>> = vec![Vec::new(); servers.len()];
    for rep in 0..settings.reps {
        // Interleaved: every server in turn, the order rotating.
        for k in 0..servers.len() {
            let si = (k + rep) % servers.len();
            let (spec, server) = &mut servers[si];
            let tag = format!("rep{rep}");
            let sample = measure(*spec, server, &settings, &tag, settings.secs);
            progress(started, rep, spec.name, sample.as_ref());
            samples[si].push(sample);
        }
    }

    let names: Vec<&str> = servers.iter().map(|(s, _)| s.name).collect();
    println!();
    println!(
        "{WORKLOAD}: 1 publisher, {SUBSCRIBERS} subscribers, {} B payloads, \
         ≤{} PUBs awaiting reply, ≤{} messages ahead of the slowest subscriber; \
         every message checked at every subscriber.",
        driver::PAYLOAD,
        settings.pipeline,
        settings.backlog
    );
    println!(
        "{} repetitions of {} s each, in {:.0} s; medians, (min–max) over repetitions.",
        settings.reps,
        settings.secs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "CPU = the server process's runtime (schedstat if one thread, else utime + stime); busy = CPU time ÷ wall time \
         (driver: its one thread); ratios taken per repetition."
    );
    println!("load average at start: {load_start}; at end: {}", loadavg());
    println!();
    print!("{}", table_of(&names, &samples));
    if let Some(verdict) = verdict(&names, &samples) {
        println!();
        println!("{verdict}");
    }
    for (_, s) in servers {
        s.stop();
    }
}

/// Starts `spec` on a socket in `dir`, pinned to `cpu`; None (with a
/// note) if it does not come up.
fn start(spec: Spec, dir: &TempDir, cpu: Option<usize>) -> Option<Server> {
    let path = dir.join(&format!("{}.sock", spec.name));
    let log = log_path(&path);
    // procs.rs panics when a server does not start; here that skips it.
    let launch = procs::Spec {
        name: spec.name,
        kind: spec.kind,
        ty: uds_reactor::SocketType::Stream,
        flags: &[],
    };
    let started = std::panic::catch_unwind(|| Server::start(&launch, path, cpu));
    match started {
        Ok(server) => {
            if let Some(cpu) = cpu {
                // Again, now that it has made whatever threads it makes.
                procs::pin(server.pid(), cpu);
            }
            Some(server)
        }
        Err(_) => {
            println!(
                "note: {} did not start; skipped. {}",
                spec.name,
                log_tail(&log)
            );
            None
        }
    }
}

/// Where a server's stdout and stderr go.
fn log_path(sock: &Path) -> PathBuf {
    sock.with_extension("log")
}

/// The last lines of a server's log, for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    if tail.is_empty() {
        "(its log is empty)".into()
    } else {
        format!("Its log ends: {tail}")
    }
}

/// The child side of `--peer NAME PATH`: replaces this process with the
/// server, so its pid (which procs.rs pins and measures) is the server's.
fn exec_peer(name: &str, path: &Path) -> ! {
    let mut cmd = match name {
        "pubsub" => {
            let mut c = Command::new(pubsub_bin());
            c.arg(path);
            c
        }
        "redis" => {
            let mut c = Command::new("redis-server");
            c.args(["--port", "0", "--unixsocket"])
                .arg(path)
                .args(["--unixsocketperm", "700"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(path.parent().unwrap_or(Path::new(".")));
            c
        }
        other => {
            eprintln!("unknown peer {other}");
            std::process::exit(2);
        }
    };
    if let Ok(log) = std::fs::File::create(log_path(path)) {
        if let Ok(dup) = log.try_clone() {
            cmd.stdout(dup);
        }
        cmd.stderr(log);
    }
    let err = cmd.exec();
    eprintln!("exec {name}: {err}");
    std::process::exit(127);
}

/// The pubsub example's binary: `UDSR_BENCH_PUBSUB`, or the one cargo
/// builds beside the uds-reactor binary.
fn pubsub_bin() -> PathBuf {
    match procs::setting("UDSR_BENCH_PUBSUB") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_BIN_EXE_uds-reactor"))
            .with_file_name("examples")
            .join("pubsub"),
    }
}

/// Builds the pubsub example (unless `UDSR_BENCH_PUBSUB` names a
/// binary); its path, or why there is none.
fn prepare_example() -> Result<PathBuf, String> {
    let bin = pubsub_bin();
    if procs::setting("UDSR_BENCH_PUBSUB").is_none() {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        if !manifest.join("examples/pubsub.rs").exists() {
            return Err("examples/pubsub.rs does not exist".into());
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--release", "--quiet", "--example", "pubsub"])
            .arg("--manifest-path")
            .arg(manifest.join("Cargo.toml"));
        eprintln!("pubsub bench: cargo build --release --example pubsub");
        run_bounded(cmd, "cargo build --release --example pubsub")?;
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("no binary at {}", bin.display()))
    }
}

/// Runs `cmd` (stdin null, output inherited) to success within
/// BUILD_TIMEOUT; a child still running then is killed by its pid.
fn run_bounded(mut cmd: Command, what: &str) -> Result<(), String> {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{what}: {status}")),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: timed out after {BUILD_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("{what}: {e}")),
        }
    }
}

/// redis-server on PATH (after `apt-get install -y redis-server` if
/// `UDSR_BENCH_INSTALL_REDIS=1` and it was missing), or why not.
fn find_redis() -> Result<PathBuf, String> {
    let on_path = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("redis-server"))
                .find(|p| p.is_file())
        })
    };
    if let Some(p) = on_path() {
        return Ok(p);
    }
    if procs::setting("UDSR_BENCH_INSTALL_REDIS").is_none_or(|v| v == "0") {
        return Err(
            "redis-server is not on PATH (apt-get install -y redis-server, \
             or set UDSR_BENCH_INSTALL_REDIS=1 to have the bench try)"
                .into(),
        );
    }
    let mut cmd = Command::new("apt-get");
    cmd.args(["install", "-y", "-q", "redis-server"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_bounded(cmd, "apt-get install -y redis-server")?;
    on_path().ok_or_else(|| "redis-server still not on PATH after apt-get".into())
}

/// Runs the workload against `server` for `secs`; None if it failed
/// (the reason on stderr).
fn measure(
    spec: Spec,
    server: &mut Server,
    settings: &Settings,
    tag: &str,
    secs: f64,
) -> Option<Sample> {
    if !server.alive() {
        eprintln!("{} {tag}: the server has exited", spec.name);
        return None;
    }
    let topic = format!("bench-{tag}");
    let cfg = Config {
        path: &server.path,
        proto: spec.proto,
        topic: &topic,
        subscribers: SUBSCRIBERS,
        pipeline: settings.pipeline,
        backlog: settings.backlog,
    };
    let mut session = match Session::connect(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{} {tag}: setup: {e}", spec.name);
            return None;
        }
    };
    let cpu_before = server.cpu();
    let result = session.run(secs);
    let cpu = server.cpu().since(cpu_before).as_secs_f64();
    drop(session);
    match result {
        Ok(r) => {
            let wall = r.elapsed.as_secs_f64();
            let delivered = r.delivered as f64;
            Some(Sample {
                rate: delivered / wall,
                cpu_us: cpu * 1e6 / delivered,
                busy: cpu / wall,
                driver_busy: r.driver_cpu.as_secs_f64() / wall,
                published: r.published,
            })
        }
        Err(e) => {
            eprintln!("{} {tag}: {e}", spec.name);
            None
        }
    }
}

/// One line on stderr per run.
fn progress(started: Instant, rep: usize, server: &str, sample: Option<&Sample>) {
    let t = started.elapsed().as_secs_f64();
    match sample {
        Some(x) => eprintln!(
            "[{t:>5.1}s] rep {} {server:<12} {:>8} PUBs, delivered {:>8} msg/s  server {:>6} µs/msg, busy {:>3.0} %  driver busy {:>3.0} %",
            rep + 1,
            x.published,
            num(x.rate),
            num(x.cpu_us),
            x.busy * 100.0,
            x.driver_busy * 100.0,
        ),
        None => eprintln!("[{t:>5.1}s] rep {} {server}: failed", rep + 1),
    }
}

/// Per-repetition ratios of server `s` to server `base`, by `f`.
fn ratio(
    samples: &[Vec<Option<Sample>>],
    s: usize,
    base: usize,
    f: impl Fn(&Sample) -> f64,
) -> Option<(f64, f64, f64)> {
    let pairs = samples[s].iter().zip(&samples[base]);
    spread(pairs.filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?))))
}

/// The markdown table: `samples[server][rep]`.
fn table_of(names: &[&str], samples: &[Vec<Option<Sample>>]) -> String {
    let redis = names.iter().position(|&n| n == REDIS.name);
    let mut out = String::from(
        "| workload | server | delivered | server CPU | server busy | driver busy | rate ÷ Redis | CPU ÷ Redis |\n\
         |---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (s, name) in names.iter().enumerate() {
        let of = |f: fn(&Sample) -> f64| spread(samples[s].iter().flatten().map(f));
        let vs = |f: fn(&Sample) -> f64| redis.and_then(|r| ratio(samples, s, r, f));
        out.push_str(&format!(
            "| {WORKLOAD} | {name} | {} | {} | {} | {} | {} | {} |\n",
            cell(of(|x| x.rate), " msg/s"),
            cell(of(|x| x.cpu_us), " µs/msg"),
            cell(of(|x| x.busy * 100.0), " %"),
            cell(of(|x| x.driver_busy * 100.0), " %"),
            cell(vs(|x| x.rate), "×"),
            cell(vs(|x| x.cpu_us), "×"),
        ));
    }
    out
}

/// The target, checked on the median ratios: at least Redis's delivered
/// rate, at lower CPU per message.
fn verdict(names: &[&str], samples: &[Vec<Option<Sample>>]) -> Option<String> {
    let us = names.iter().position(|&n| n == REACTOR.name)?;
    let redis = names.iter().position(|&n| n == REDIS.name)?;
    let (rate, _, _) = ratio(samples, us, redis, |x| x.rate)?;
    let (cpu, _, _) = ratio(samples, us, redis, |x| x.cpu_us)?;
    let met = rate >= 1.0 && cpu < 1.0;
    Some(format!(
        "Target (rate ≥ Redis's at lower CPU per message): {} — median rate ÷ Redis {}×, CPU ÷ Redis {}×.",
        if met { "met" } else { "not met" },
        num(rate),
        num(cpu)
    ))
}

/// The 1-minute load average, from /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
