//! Stream echo against the real binary: every byte back, in order, exactly
//! once, whatever the size, the chunking and the number of connections;
//! half-closed peers still get everything back before EOF.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, pattern, Proc, Rng, TempDir, PATIENCE};
use sha2::{Digest, Sha256};

/// Writes `data` in random-sized chunks (1 byte to 128 KiB), then shuts
/// down the write side.
fn write_chunked(mut s: UnixStream, data: &[u8], seed: u64) {
    let mut rng = Rng(seed | 1);
    let mut at = 0;
    while at < data.len() {
        // Mostly mid-sized chunks, sometimes tiny ones that split frames.
        let max = match rng.range(0, 3) {
            0 => 16,
            1 => 4 << 10,
            _ => 128 << 10,
        };
        let n = rng.range(1, max).min(data.len() - at);
        s.write_all(&data[at..at + n]).expect("write");
        at += n;
    }
    s.shutdown(Shutdown::Write).expect("shutdown write");
}

/// Reads until EOF in random-sized reads.
fn read_to_eof(s: &mut UnixStream, expect_len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut got = Vec::with_capacity(expect_len);
    let mut buf = vec![0; 256 << 10];
    loop {
        let want = rng.range(1, buf.len());
        let n = s.read(&mut buf[..want]).expect("read");
        if n == 0 {
            return got;
        }
        got.extend_from_slice(&buf[..n]);
        assert!(got.len() <= expect_len, "more bytes echoed than sent");
    }
}

/// Sends `data` with a writer thread while this thread reads; returns what
/// came back before EOF.
fn round_trip(path: &Path, data: Vec<u8>, seed: u64) -> Vec<u8> {
    let mut s = connect(path);
    let w = s.try_clone().unwrap();
    let len = data.len();
    let writer = thread::spawn(move || write_chunked(w, &data, seed));
    let got = read_to_eof(&mut s, len, seed.rotate_left(17));
    writer.join().expect("writer thread");
    got
}

/// Log-uniform sizes from 1 byte to 6 MiB: many small, a few big.
fn random_size(rng: &mut Rng) -> usize {
    let bits = rng.range(0, 22);
    let lo = 1usize << bits;
    rng.range(lo, (lo * 3 / 2).max(lo + 1))
}

#[test]
fn random_sizes_and_chunkings_over_64_connections() {
    let dir = TempDir::new("echo-many");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);

    const CONNS: u64 = 64;
    let mut rng = Rng(0x5eed_1234);
    // The extremes always appear; the rest are random.
    let mut sizes: Vec<usize> = (0..CONNS).map(|_| random_size(&mut rng)).collect();
    sizes[0] = 1;
    sizes[1] = 6 << 20;
    sizes[2] = (3 << 20) + 7;
    let total: usize = sizes.iter().sum();

    let started = Instant::now();
    let clients: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let path = path.clone();
            thread::spawn(move || {
                let seed = 1000 + i as u64;
                let data = pattern(seed, size);
                let got = round_trip(&path, data.clone(), seed);
                assert_eq!(got.len(), size, "connection {i}: length");
                assert!(
                    got == data,
                    "connection {i}: {size} bytes came back altered"
                );
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    eprintln!(
        "echoed {total} bytes over {CONNS} connections in {:?}",
        started.elapsed()
    );
    assert!(server.stop().success());
    let stats = server.wait_for("stats open=");
    assert!(stats.contains(&format!("accepted={CONNS} ")), "{stats}");
    assert!(
        stats.contains(&format!("bytes_in={total} bytes_out={total} ")),
        "{stats}"
    );
}

/// 256 MiB through one connection, both directions hashed.
#[test]
fn quarter_gigabyte_verified_by_hash() {
    const TOTAL: usize = 256 << 20;
    const BLOCK: usize = 1 << 20;
    let dir = TempDir::new("echo-big");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);

    // One random MiB, sent rotated by a different amount each time so that
    // a reordered or repeated block changes the hash.
    let block = pattern(77, BLOCK);
    let mut s = connect(&path);
    let mut w = s.try_clone().unwrap();
    let started = Instant::now();
    let writer = thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut rng = Rng(99);
        for i in 0..TOTAL / BLOCK {
            let cut = (i * 7919) % BLOCK;
            for part in [&block[cut..], &block[..cut]] {
                // Uneven writes: the server sees every chunking.
                for piece in part.chunks(rng.range(1, 256 << 10)) {
                    w.write_all(piece).expect("write");
                }
                hash.update(part);
            }
        }
        w.shutdown(Shutdown::Write).unwrap();
        hash.finalize()
    });
    let mut hash = Sha256::new();
    let mut buf = vec![0; 256 << 10];
    let mut got = 0usize;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        got += n;
    }
    let sent = writer.join().expect("writer");
    let elapsed = started.elapsed();
    assert_eq!(got, TOTAL);
    assert_eq!(
        hash.finalize(),
        sent,
        "echoed stream differs from the sent one"
    );
    eprintln!(
        "256 MiB echoed and verified in {elapsed:?} ({:.0} MiB/s)",
        TOTAL as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
    );
    assert!(server.stop().success());
}

/// The client writes everything, shuts down its write side, and only then
/// starts reading: the server owes it all and must deliver before closing.
#[test]
fn half_close_gets_everything_back_then_eof() {
    let dir = TempDir::new("echo-half");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);

    // Small enough to sit in the socket buffers and the server's output
    // (under --max-buffer) without anyone reading yet.
    for (i, size) in [0usize, 1, 1000, 100 << 10].into_iter().enumerate() {
        let data = pattern(i as u64 + 5, size);
        let mut s = connect(&path);
        s.write_all(&data).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to EOF");
        assert!(got == data, "{size} bytes: echo differs after half-close");
        // EOF is sticky: the server closed its side.
        let mut more = [0u8; 1];
        assert_eq!(s.read(&mut more).unwrap(), 0);
    }

    // Larger than all buffers: written concurrently, shut down, then the
    // tail must still arrive after our FIN.
    let data = pattern(42, 8 << 20);
    let got = round_trip(&path, data.clone(), 42);
    assert!(got == data, "8 MiB half-closed echo differs");

    // The server is still fine afterwards.
    let mut s = connect(&path);
    s.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping");
    drop(s);
    assert!(server.stop().success());
}

/// Input that stops mid-stream (peer vanishes without a FIN being read)
/// does not disturb other connections.
#[test]
fn abrupt_disconnects_do_not_disturb_others() {
    let dir = TempDir::new("echo-abrupt");
    let path = dir.path("s.sock");
    let mut server = Proc::serve(&[path.to_str().unwrap()]);
    let mut steady = connect(&path);
    for i in 0..50u64 {
        // A peer sends a lot and leaves without reading: the server's
        // writes fail (EPIPE/ECONNRESET) and must not kill the process.
        let mut s = connect(&path);
        let _ = s.write_all(&pattern(i, 200 << 10));
        drop(s);
        let msg = pattern(i + 1000, 512);
        steady.write_all(&msg).unwrap();
        let mut back = vec![0; msg.len()];
        steady.read_exact(&mut back).unwrap();
        assert!(back == msg);
    }
    drop(steady);
    let deadline = Instant::now() + PATIENCE;
    // Every connection gets reaped.
    loop {
        server.signal(10);
        let line = server.wait_for("stats open=");
        if line.contains("stats open=0 ") {
            break;
        }
        assert!(Instant::now() < deadline, "connections left open: {line}");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stop().success());
}
