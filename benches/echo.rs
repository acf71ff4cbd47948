//! End-to-end echo benchmark: uds-reactor against peers written for the
//! purpose, on stream, seqpacket, datagram and descriptor-passing
//! workloads, in two placements, in one run.
//!
//! Each workload belongs to a family that names the servers able to run
//! it (benches/echo/workloads.rs); each server is a child process (so
//! /proc/PID/stat and VmRSS are its own), started once for the run:
//!
//! | family | servers | ratios against |
//! |---|---|---|
//! | stream | uds-reactor, tokio-ct, std-threads, raw-epoll | tokio-ct, raw-epoll |
//! | seqpacket | uds-reactor `--type seqpacket`, raw-epoll-seqpacket | raw-epoll-seqpacket |
//! | dgram | uds-reactor `--type dgram`, raw-epoll-dgram, tokio-dgram | tokio-dgram, raw-epoll-dgram |
//! | fds | uds-reactor `--max-fds 1`, raw-epoll-fds | raw-epoll-fds |
//!
//! - `uds-reactor`: the release binary, default flags but those above;
//! - `tokio-ct`: tokio `current_thread`, a task per connection, 64 KiB
//!   buffer each (benches/peers/tokio_ct.rs);
//! - `std-threads`: a thread per connection, blocking std sockets
//!   (benches/peers/threads.rs);
//! - `raw-epoll`: level-triggered epoll on libc, one shared 64 KiB buffer
//!   (uds-reactor's read size), bytes kept only after a short write — what
//!   one thread can do at best (benches/peers/epoll.rs);
//! - `raw-epoll-seqpacket`: the same loop on a seqpacket listener with a
//!   1 MiB buffer (the default `--max-frame`) (epoll_seqpacket.rs);
//! - `raw-epoll-dgram`: one datagram socket, level-triggered, one
//!   `recvfrom` per readiness and a `sendto` back to the sender, a reply
//!   kept only when its send would block (epoll_dgram.rs);
//! - `tokio-dgram`: tokio `current_thread`, `UnixDatagram::recv_from` then
//!   `send_to` (tokio_dgram.rs);
//! - `raw-epoll-fds`: raw-epoll with `recvmsg`/`sendmsg` passing the
//!   descriptors back (epoll_fds.rs).
//!
//! The load generator (`uds-reactor load --json --type ...`, the same
//! built binary, verifying every echoed byte and descriptor) runs as a
//! child process for each run (benches/echo/load.rs). The servers are
//! pinned to CPU 0; the load generator, in each placement
//! (`UDSR_BENCH_PLACEMENT=split|same|both`, default both):
//!
//! - `split`: on CPU 1. Each side has a CPU; every message costs a
//!   cross-CPU wake-up.
//! - `same`: on CPU 0 with the server. No cross-CPU wake-ups, and the
//!   server's CPU share is what it costs: on two cores shared with other
//!   work, the low-noise placement.
//!
//! On one CPU nothing is pinned and there is one placement. The workloads,
//! run for each of their servers in turn (the order of servers and of
//! placements rotating each repetition), several times:
//!
//! | name | what |
//! |---|---|
//! | ping-pong 1 | 1 connection, 64-byte messages, pipeline 1 |
//! | ping-pong 100 | 100 connections, 64-byte messages, pipeline 1 |
//! | stream 1 | 1 connection, 64 KiB messages, 4 in flight |
//! | stream 100 | 100 connections, 16 KiB messages, 4 in flight each |
//! | churn | 8 connections at once, each: connect, one 64-byte echo, close |
//! | idle 10k | RSS growth with 10,000 idle connections (each echoed 1 byte), on a fresh server process; first placement only |
//! | seqpacket ping-pong 1 / 100 | as ping-pong, on seqpacket |
//! | seqpacket bulk 1 | 1 connection, 8 KiB messages, 8 in flight |
//! | dgram ping-pong 1 / 100 | as ping-pong, with 1 or 100 bound senders (past `net.unix.max_dgram_qlen` queued, 10 by default, a send would block: the load generator retries it after 1 ms) |
//! | dgram bulk 1 | 1 sender, 8 KiB datagrams, 8 in flight |
//! | fd ping-pong 1 / 100 | as ping-pong, one descriptor attached to every message (`load --fds 1`) |
//!
//! Reported per placement, workload and server: throughput, latency
//! p50/p99 (from the load generator), the server's own CPU time (utime +
//! stime) per message, per GB or per connection, and the ratios of
//! throughput and CPU to the workload's tokio and raw-epoll peers in the
//! same repetition, as medians with min–max over the repetitions. One
//! markdown table per placement.
//!
//! ```text
//! cargo bench --bench echo                        # 5 repetitions of 1 s, both placements (about 9 minutes)
//! UDSR_BENCH_QUICK=1 cargo bench --bench echo     # 1 repetition of 0.5 s
//! UDSR_BENCH_REPS=3 UDSR_BENCH_SECS=1 UDSR_BENCH_ONLY=ping cargo bench --bench echo
//! UDSR_BENCH_PLACEMENT=same UDSR_BENCH_ONLY=dgram cargo bench --bench echo
//! ```
//!
//! `UDSR_BENCH_ONLY` keeps the workloads whose name contains it;
//! `UDSR_BENCH_SERVERS` (comma-separated) the servers named (each
//! workload's tokio and raw-epoll peers always run: the ratios need them).
//! `UDSR_BENCH_BASELINE=PATH` adds another uds-reactor binary as
//! `uds-reactor-base`, with uds-reactor's flags for each workload, to
//! measure a change against the build before it in the same run.
//! `cargo bench --bench fds` runs the fd ping-pong workloads alone.

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
    // `cargo bench` passes `--bench`; other arguments are ignored.
    run::main(None, "echo");
}
