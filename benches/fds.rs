//! Descriptor passing, end to end: the echo bench's fd ping-pong
//! workloads alone (uds-reactor `--max-fds 1` against raw-epoll-fds,
//! benches/peers/epoll_fds.rs), with the same settings, placements and
//! table (see benches/echo.rs).
//!
//! Workloads: ping-pong with one descriptor attached to every 64-byte
//! message, over 1 and 100 connections (`uds-reactor load --fds 1`, which
//! checks by device and inode that the same open file comes back with
//! each echo).
//!
//! ```text
//! cargo bench --bench fds                     # 5 repetitions of 1 s, both placements
//! UDSR_BENCH_QUICK=1 cargo bench --bench fds  # 1 repetition of 0.5 s
//! ```

#[path = "echo/load.rs"]
mod load;
mod peers;
#[path = "echo/procs.rs"]
#[allow(dead_code)] // placement() is the pubsub bench's
mod procs;
#[path = "echo/run.rs"]
mod run;
#[path = "echo/table.rs"]
mod table;
#[path = "echo/workloads.rs"]
mod workloads;

fn main() {
    peers::serve_if_asked();
    run::main(Some(workloads::Family::Fds), "fds");
}
