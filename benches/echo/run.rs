//! One run of the echo bench: settings from the environment, the servers
//! started once per family, every workload on every server in every
//! placement, repeated, then one table per placement.

use std::time::Instant;

use crate::load;
use crate::procs::{self, Placement, Server, Spec, TempDir};
use crate::table::{self, Results, Sample, Unit};
use crate::workloads::{Family, Workload, IDLE, WORKLOADS};

/// Repetitions of the RSS workload: it varies little (a byte or two per
/// connection) and costs the most time (10,000 threads to start).
const RSS_REPS: usize = 3;
/// Default repetitions and seconds per run, and with `UDSR_BENCH_QUICK`.
const DEFAULT: (usize, f64) = (5, 1.0);
const QUICK: (usize, f64) = (1, 0.5);
/// Each server's unmeasured first run, in seconds.
const WARM_UP_SECS: f64 = 0.2;

/// Run settings, from the environment.
struct Settings {
    reps: usize,
    secs: f64,
    only: Option<String>,
    servers: Option<Vec<String>>,
    placement: String,
    baseline: bool,
}

impl Settings {
    fn from_env() -> Settings {
        let (reps, secs) = procs::reps_and_secs(DEFAULT, QUICK);
        Settings {
            reps,
            secs,
            only: procs::setting("UDSR_BENCH_ONLY"),
            servers: procs::setting("UDSR_BENCH_SERVERS")
                .map(|v| v.split(',').map(str::to_owned).collect()),
            placement: procs::setting("UDSR_BENCH_PLACEMENT").unwrap_or_else(|| "both".into()),
            baseline: std::env::var_os("UDSR_BENCH_BASELINE").is_some(),
        }
    }

    /// The servers of `family` to run: all, or those in
    /// `UDSR_BENCH_SERVERS` plus the peers the ratios need, plus
    /// `uds-reactor-base` when `UDSR_BENCH_BASELINE` is set.
    fn servers(&self, family: Family) -> Vec<Spec> {
        let base = self.baseline.then(|| family.baseline());
        let wanted = |s: &Spec| {
            s.name == family.raw()
                || Some(s.name) == family.tokio()
                || s.name == "uds-reactor-base"
                || self
                    .servers
                    .as_ref()
                    .is_none_or(|list| list.iter().any(|n| n == s.name))
        };
        family
            .servers()
            .iter()
            .copied()
            .chain(base)
            .filter(wanted)
            .collect()
    }
}

/// The servers of one family, started once for the whole run.
struct Group {
    family: Family,
    specs: Vec<Spec>,
    servers: Vec<Server>,
}

impl Group {
    fn position(&self, name: Option<&str>) -> Option<usize> {
        let name = name?;
        self.specs.iter().position(|s| s.name == name)
    }
}

/// `samples[placement][workload][server][rep]`.
type Samples = Vec<Vec<Vec<Vec<Option<Sample>>>>>;

/// Runs the bench on the workloads of `family` (all if None), the
/// sockets in a temporary directory tagged `tag`, and prints the tables.
pub fn main(family: Option<Family>, tag: &str) {
    let mut bench = Bench::start(family, tag);
    bench.warm_up();
    // Other work on the machine skews everything: say how much there was.
    let load_start = loadavg();
    let started = Instant::now();
    let samples = bench.repeat(started);
    println!();
    println!(
        "{} repetitions of {} s each, in {:.0} s; medians, (min–max) over repetitions.",
        bench.settings.reps,
        bench.settings.secs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "CPU = the server process's runtime (schedstat if one thread, else utime + stime); ratios taken per repetition."
    );
    println!("load average at start: {load_start}; at end: {}", loadavg());
    for (pi, p) in bench.placements.iter().enumerate() {
        println!();
        println!("{}", p.describe());
        println!();
        print!("{}", bench.table(&samples[pi]));
    }
    for g in bench.groups {
        g.servers.into_iter().for_each(Server::stop);
    }
}

/// Everything a run needs, its servers started.
struct Bench {
    settings: Settings,
    placements: Vec<Placement>,
    workloads: Vec<&'static Workload>,
    groups: Vec<Group>,
    /// `groups[group_of[w]]` runs `workloads[w]`.
    group_of: Vec<usize>,
    /// Connections the idle workload opens (IDLE, or fewer if the
    /// open-file limit says so).
    idle: usize,
    /// Where the sockets are; removed last.
    dir: TempDir,
}

impl Bench {
    /// Reads the settings, chooses the workloads and starts the servers
    /// of every family that has one.
    fn start(family: Option<Family>, tag: &str) -> Bench {
        let settings = Settings::from_env();
        let placements = procs::placements(&settings.placement).unwrap_or_else(|e| {
            eprintln!("{e}");
            std::process::exit(2);
        });
        let workloads: Vec<&Workload> = WORKLOADS
            .iter()
            .filter(|w| family.is_none_or(|f| w.family == f))
            .filter(|w| settings.only.as_deref().is_none_or(|o| w.name.contains(o)))
            .collect();
        if workloads.is_empty() {
            let only = settings.only.as_deref().unwrap_or_default();
            eprintln!("no workload's name contains UDSR_BENCH_ONLY={only}");
            std::process::exit(2);
        }
        // The idle workload holds IDLE descriptors here (and in the server).
        let nofile = uds_reactor::raise_open_file_limit().unwrap_or(1024);
        let idle = IDLE.min(nofile.saturating_sub(64) as usize);
        if idle < IDLE && workloads.iter().any(|w| w.unit == Unit::Rss) {
            println!(
                "open-file limit {nofile}: the idle workload opens {idle} connections, not {IDLE}"
            );
        }
        let dir = TempDir::new(tag);
        // Servers are pinned once: every placement puts them on one CPU.
        let cpu = placements[0].server;
        let mut groups: Vec<Group> = Vec::new();
        for f in [
            Family::Stream,
            Family::Seqpacket,
            Family::Dgram,
            Family::Fds,
        ] {
            if workloads.iter().any(|w| w.family == f) {
                let specs = settings.servers(f);
                let servers = specs
                    .iter()
                    .map(|s| Server::start(s, dir.join(&sock_name(f, s)), cpu))
                    .collect();
                groups.push(Group {
                    family: f,
                    specs,
                    servers,
                });
            }
        }
        let group_of = workloads
            .iter()
            .map(|w| {
                groups
                    .iter()
                    .position(|g| g.family == w.family)
                    .expect("started")
            })
            .collect();
        eprintln!(
            "echo bench: {} repetitions of {} s; {}; placements: {}",
            settings.reps,
            settings.secs,
            env!("CARGO_BIN_EXE_uds-reactor"),
            placements
                .iter()
                .map(Placement::describe)
                .collect::<Vec<_>>()
                .join("; "),
        );
        Bench {
            settings,
            placements,
            workloads,
            groups,
            group_of,
            idle,
            dir,
        }
    }

    /// Faults in every server's code and buffers before anything is
    /// measured: its family's largest workload, briefly.
    fn warm_up(&self) {
        for g in &self.groups {
            let w = Workload::warm_up(g.family);
            for s in &g.servers {
                let _ = measure(s, w, WARM_UP_SECS, self.placements[0].load);
            }
        }
    }

    /// Every repetition: each placement in turn (the order rotating),
    /// each workload, each of its servers in turn (the order rotating).
    fn repeat(&mut self, started: Instant) -> Samples {
        let mut samples: Samples = (self.placements.iter())
            .map(|_| {
                (self.group_of.iter())
                    .map(|&g| vec![Vec::new(); self.groups[g].servers.len()])
                    .collect()
            })
            .collect();
        for rep in 0..self.settings.reps {
            for i in 0..self.placements.len() {
                let pi = (i + rep) % self.placements.len();
                for (wi, by_server) in samples[pi].iter_mut().enumerate() {
                    let (p, w) = (self.placements[pi], self.workloads[wi]);
                    // RSS does not depend on placement: the first only.
                    if w.unit == Unit::Rss && (pi != 0 || rep >= RSS_REPS) {
                        continue;
                    }
                    let n = by_server.len();
                    for k in 0..n {
                        let si = (k + rep) % n;
                        let sample = self.one(p, wi, si);
                        let name = self.groups[self.group_of[wi]].specs[si].name;
                        progress(started, rep, p, w, name, sample.as_ref());
                        by_server[si].push(sample);
                    }
                }
            }
        }
        samples
    }

    /// One run of workload `wi` on its group's server `si` in placement
    /// `p`; None if it failed.
    fn one(&mut self, p: Placement, wi: usize, si: usize) -> Option<Sample> {
        let w = self.workloads[wi];
        let g = &mut self.groups[self.group_of[wi]];
        if w.unit == Unit::Rss {
            // A fresh process: one that served before keeps its grown
            // tables and freed memory, and would show no growth.
            let spec = &g.specs[si];
            let path = self
                .dir
                .join(&format!("idle-{}", sock_name(g.family, spec)));
            let fresh = Server::start(spec, path, p.server);
            let sample = measure_rss(&fresh, self.idle);
            fresh.stop();
            sample
        } else if g.servers[si].alive() {
            measure(&g.servers[si], w, self.settings.secs, p.load)
        } else {
            None
        }
    }

    /// The markdown table of one placement's samples
    /// (`samples[workload][server][rep]`); workloads not run there are
    /// left out.
    fn table(&self, samples: &[Vec<Vec<Option<Sample>>>]) -> String {
        let mut out = String::from(table::HEADER);
        for (wi, w) in self.workloads.iter().enumerate() {
            if samples[wi].iter().all(Vec::is_empty) {
                continue; // idle 10k, measured in the first placement
            }
            let g = &self.groups[self.group_of[wi]];
            Results {
                workload: w.name,
                unit: w.unit,
                servers: &g.specs.iter().map(|s| s.name).collect::<Vec<_>>(),
                samples: &samples[wi],
            }
            .rows(
                &mut out,
                g.position(g.family.tokio()),
                g.position(Some(g.family.raw())),
            );
        }
        out
    }
}

/// The socket file of `spec` serving `family`.
fn sock_name(family: Family, spec: &Spec) -> String {
    format!(
        "{}-{}.sock",
        format!("{family:?}").to_lowercase(),
        spec.name
    )
}

/// One line on stderr per run.
fn progress(
    started: Instant,
    rep: usize,
    p: Placement,
    w: &Workload,
    server: &str,
    sample: Option<&Sample>,
) {
    let t = started.elapsed().as_secs_f64();
    match sample {
        Some(x) => eprintln!(
            "[{t:>5.1}s] rep {} {:<5} {:<24} {:<19} rate {:>10} p50 {:>7.1} µs p99 {:>7.1} µs cpu {}",
            rep + 1,
            p.name,
            w.name,
            server,
            table::num(x.rate),
            x.p50_us,
            x.p99_us,
            table::num(x.cpu),
        ),
        None => eprintln!(
            "[{t:>5.1}s] rep {} {} {} {server}: failed",
            rep + 1,
            p.name,
            w.name
        ),
    }
}

/// Runs `w` against `server` for `secs`, the load generator on
/// `load_cpu`; None if the run failed.
fn measure(server: &Server, w: &Workload, secs: f64, load_cpu: Option<usize>) -> Option<Sample> {
    let run = load::Run {
        path: &server.path,
        ty: w.family.ty(),
        connections: w.connections,
        size: w.size,
        pipeline: w.pipeline,
        churn: w.churn,
        secs,
        fds: w.family.fds(),
    };
    let cpu_before = server.cpu();
    let report = match load::run(&run, load_cpu) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{} {}: {e}", w.name, server.name);
            return None;
        }
    };
    let cpu = server.cpu().since(cpu_before).as_secs_f64();
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
