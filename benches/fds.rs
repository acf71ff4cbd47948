//! Descriptor passing, end to end: uds-reactor `--max-fds 1` against
//! raw-epoll extended to pass descriptors the same way
//! (benches/peers/epoll_fds.rs), in one run.
//!
//! Workloads: ping-pong with one descriptor attached to every 64-byte
//! message, over 1 and 100 connections (`uds-reactor load --fds 1`, which
//! checks by device and inode that the same open file comes back with
//! each echo). Reported: messages/s, p50/p99 latency, and the server's own
//! CPU (utime + stime) per message, with the ratios uds-reactor ÷
//! raw-epoll-fds per repetition, as medians (min–max). Placement as in
//! the echo bench: servers on CPU 0, the load generator on CPU 1.
//!
//! ```text
//! cargo bench --bench fds                     # 6 repetitions of 1 s
//! UDSR_BENCH_QUICK=1 cargo bench --bench fds  # 1 repetition of 0.5 s
//! ```

#[path = "echo/load.rs"]
#[allow(dead_code)] // the echo bench reads the rest of the report
mod load;
mod peers;
#[path = "echo/procs.rs"]
#[allow(dead_code)] // shared with the echo bench, which uses all of it
mod procs;
#[path = "echo/table.rs"]
#[allow(dead_code)]
mod table;

use procs::{Kind, Server, TempDir};
use table::{cell, spread};

const SERVERS: [(&str, Kind); 2] = [
    ("uds-reactor", Kind::ReactorWith(&["--max-fds", "1"])),
    ("raw-epoll-fds", Kind::Peer("raw-epoll-fds")),
];

/// (name, connections)
const WORKLOADS: [(&str, usize); 2] = [("fd ping-pong 1", 1), ("fd ping-pong 100", 100)];

/// One run: msgs/s, p50, p99, server CPU µs per message.
type Sample = (f64, f64, f64, f64);

fn main() {
    peers::serve_if_asked();
    let quick = std::env::var("UDSR_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (reps, secs) = if quick { (1, 0.5) } else { (6, 1.0) };
    let (server_cpu, load_cpu) = procs::placement();
    let dir = TempDir::new("fds");
    let servers: Vec<Server> = SERVERS
        .iter()
        .map(|&(name, kind)| {
            Server::start(name, kind, dir.join(&format!("{name}.sock")), server_cpu)
        })
        .collect();
    // samples[workload][server][rep]
    let mut samples = vec![vec![Vec::new(); servers.len()]; WORKLOADS.len()];
    for rep in 0..reps {
        for (wi, &(name, connections)) in WORKLOADS.iter().enumerate() {
            for k in 0..servers.len() {
                let si = (k + rep) % servers.len();
                let s = measure(&servers[si], connections, secs, load_cpu);
                match s {
                    Some((rate, p50, p99, cpu)) => eprintln!(
                        "rep {} {name:<17} {:<14} {:>9} msgs/s p50 {p50:.1} µs p99 {p99:.1} µs cpu {cpu:.2} µs/msg",
                        rep + 1,
                        servers[si].name,
                        table::num(rate)
                    ),
                    None => eprintln!("rep {} {name} {}: failed", rep + 1, servers[si].name),
                }
                samples[wi][si].push(s);
            }
        }
    }
    println!("\n{reps} repetitions of {secs} s; medians (min–max). CPU = server utime + stime.\n");
    println!(
        "| workload | server | msgs/s | p50 µs | p99 µs | CPU µs/msg | msgs/s ÷ raw | CPU ÷ raw |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for (wi, &(name, _)) in WORKLOADS.iter().enumerate() {
        for (si, server) in servers.iter().enumerate() {
            let col = |f: fn(&Sample) -> f64| spread(samples[wi][si].iter().flatten().map(f));
            let ratio = |f: fn(&Sample) -> f64| {
                let pairs = samples[wi][si].iter().zip(&samples[wi][1]);
                spread(pairs.filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?))))
            };
            println!(
                "| {name} | {} | {} | {} | {} | {} | {} | {} |",
                server.name,
                cell(col(|s| s.0), ""),
                cell(col(|s| s.1), ""),
                cell(col(|s| s.2), ""),
                cell(col(|s| s.3), ""),
                cell(ratio(|s| s.0), "×"),
                cell(ratio(|s| s.3), "×"),
            );
        }
    }
    for s in servers {
        s.stop();
    }
}

fn measure(server: &Server, connections: usize, secs: f64, cpu: Option<usize>) -> Option<Sample> {
    let run = load::Run {
        path: &server.path,
        connections,
        size: 64,
        pipeline: 1,
        churn: false,
        secs,
        fds: 1,
    };
    let before = server.cpu();
    let report = match load::run(&run, cpu) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", server.name);
            return None;
        }
    };
    let used = (server.cpu() - before).as_secs_f64();
    Some((
        report.msgs_per_sec,
        report.p50_us,
        report.p99_us,
        used * 1e6 / report.messages,
    ))
}
