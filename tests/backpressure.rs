//! Backpressure: a peer that writes without reading makes the server stop
//! reading it once `--max-buffer` of echo is owed, so the server's memory
//! stays bounded, other peers are still served, and every byte arrives
//! intact once the peer reads.

mod common;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{echo_through, pattern, stat, Proc, TempDir, PATIENCE};
use sha2::{Digest, Sha256};

/// How long a write may make no progress before we call the peer stalled.
const STALL: Duration = Duration::from_millis(300);
/// The server's default `--max-buffer`.
const MAX_BUFFER: u64 = 256 << 10;
/// The bound asserted on the server's RSS growth under one non-reading
/// peer: `--max-buffer`, a read chunk and allocator slack come to well
/// under 1 MiB; 8 MiB leaves room for noise yet is far below 64 MiB.
const PEAK_GROWTH_KIB: u64 = 8 << 10;

/// Samples a process's RSS every few milliseconds until dropped, keeping
/// the peak.
struct RssMonitor {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssMonitor {
    fn start(pid: i32) -> RssMonitor {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (Arc::clone(&peak), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(common::rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(2));
            }
        });
        RssMonitor {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn peak_kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `data` from `at` until a write makes no progress for two
/// [`STALL`] periods in a row; returns how far it got.
fn write_until_stalled(s: &mut UnixStream, data: &[u8], mut at: usize) -> usize {
    s.set_write_timeout(Some(STALL)).unwrap();
    let mut idle = 0;
    let deadline = Instant::now() + PATIENCE;
    while at < data.len() && idle < 2 {
        assert!(Instant::now() < deadline, "never stalled");
        let end = (at + (64 << 10)).min(data.len());
        match s.write(&data[at..end]) {
            Ok(n) => {
                at += n;
                idle = 0;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                idle += 1
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    s.set_write_timeout(Some(PATIENCE)).unwrap();
    at
}

/// One echo round trip of `len` bytes on a fresh connection.
fn echo_once(path: &Path, len: usize, seed: u64) {
    let data = pattern(seed, len);
    let got = echo_through(path, &data);
    assert!(got == data, "echo of {len} bytes differs");
}

/// The values of `keys` from one counters line (asked by SIGUSR1).
fn counters<const N: usize>(p: &mut Proc, keys: [&str; N]) -> [u64; N] {
    let line = p.stats();
    keys.map(|key| stat(&line, key))
}

#[test]
fn non_reading_peer_is_bounded_others_served_and_all_bytes_arrive() {
    const TOTAL: usize = 64 << 20;
    let dir = TempDir::new("bp");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);
    // Warm up (first connection, first allocations) before the baseline.
    echo_once(&path, 100_000, 1);
    let baseline = server.rss_kib();
    let monitor = RssMonitor::start(server.pid());

    let data = Arc::new(pattern(64, TOTAL));
    let mut flood = UnixStream::connect(&path).unwrap();
    flood.set_read_timeout(Some(PATIENCE)).unwrap();
    // Write until the server owes --max-buffer (so it has stopped reading,
    // by its own rule) and our writes stall. A stall alone could be the
    // server descheduled on a busy machine, so the counters decide.
    let deadline = Instant::now() + PATIENCE;
    let mut stalled_at = 0;
    loop {
        stalled_at = write_until_stalled(&mut flood, &data, stalled_at);
        let [bytes_in, bytes_out] = counters(&mut server, ["bytes_in", "bytes_out"]);
        if bytes_in - bytes_out >= MAX_BUFFER {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never owed --max-buffer"
        );
    }
    // Fill whatever room the server made before it stopped.
    stalled_at = write_until_stalled(&mut flood, &data, stalled_at);
    // Socket buffers both ways plus --max-buffer (256 KiB): a few MiB at
    // most, nowhere near the whole payload.
    assert!(
        stalled_at < 8 << 20,
        "the server took {stalled_at} bytes from a peer that does not read"
    );
    let stalled_rss = server.rss_kib();

    // Another peer is served while the first one is stalled, and the
    // server reads nothing more from the flooder meanwhile.
    let [read_before] = counters(&mut server, ["bytes_in"]);
    echo_once(&path, 1 << 20, 2);
    let [read_after] = counters(&mut server, ["bytes_in"]);
    assert_eq!(
        read_after - read_before,
        1 << 20,
        "the server read from a backpressured peer"
    );

    // Now read everything back while writing the rest.
    let mut w = flood.try_clone().unwrap();
    let sent = Arc::clone(&data);
    let writer = thread::spawn(move || {
        w.write_all(&sent[stalled_at..]).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut hash = Sha256::new();
    let mut buf = vec![0; 256 << 10];
    let mut got = 0;
    loop {
        let n = flood.read(&mut buf).expect("read back");
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n;
    }
    writer.join().unwrap();
    assert_eq!(got, TOTAL);
    assert_eq!(
        hash.finalize(),
        Sha256::digest(&data[..]),
        "64 MiB came back altered"
    );

    let peak = monitor.peak_kib();
    drop(monitor);
    eprintln!(
        "64 MiB non-reading peer: server RSS baseline {baseline} KiB; stalled after \
         {stalled_at} bytes with RSS {stalled_rss} KiB; peak {peak} KiB (+{} KiB)",
        peak.saturating_sub(baseline)
    );
    assert!(
        peak < baseline + PEAK_GROWTH_KIB,
        "RSS peaked at {peak} KiB from a baseline of {baseline} KiB"
    );
    assert!(server.stop().success());
}

/// Many stalled peers at once: memory grows by about `--max-buffer` each,
/// and the server still answers.
#[test]
fn many_stalled_peers_stay_within_their_buffers() {
    const PEERS: usize = 16;
    let dir = TempDir::new("bp-many");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap(), "--max-buffer", "128K"]);
    echo_once(&path, 100_000, 3);
    let baseline = server.rss_kib();
    let data = Arc::new(pattern(5, 16 << 20));
    // All at once, each on its own thread.
    let (peers, stalled): (Vec<UnixStream>, Vec<usize>) = (0..PEERS)
        .map(|_| {
            let mut p = UnixStream::connect(&path).unwrap();
            let data = Arc::clone(&data);
            thread::spawn(move || {
                let n = write_until_stalled(&mut p, &data, 0);
                (p, n)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .unzip();
    let rss = server.rss_kib();
    eprintln!(
        "{PEERS} stalled peers: RSS {rss} KiB from {baseline} KiB (+{} KiB); stalled after {stalled:?}",
        rss.saturating_sub(baseline)
    );
    // 128 KiB of output each plus the read chunk that crossed the limit.
    assert!(
        rss < baseline + (PEERS as u64) * 512 + (8 << 10),
        "RSS {rss} KiB from a baseline of {baseline} KiB"
    );
    echo_once(&path, 1 << 20, 4);
    // Each stalled peer still gets back exactly what it managed to send.
    for (i, (mut p, n)) in peers.into_iter().zip(stalled).enumerate() {
        p.shutdown(Shutdown::Write).unwrap();
        p.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        p.read_to_end(&mut got).unwrap();
        assert!(got[..] == data[..n], "peer {i}: echo differs");
    }
    assert!(server.stop().success());
}
