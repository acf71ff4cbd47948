//! Decoder and buffer throughput: the pure code under every connection.
//!
//! `decode`: a 4 MiB stream of frames of one payload size (64 B, 1 KiB,
//! 64 KiB) fed to a [`Decoder`] in 64 KiB chunks, as the server reads it,
//! for each framing; the sink only notes each payload's length. The
//! decoders are zero-copy, so this is the framing's own cost: raw passes
//! each chunk through untouched (its figure is call overhead, not a
//! memory speed), line pays a `memchr` over every byte, length a header
//! per frame. A frame that straddles two reads (most 64 KiB frames, whose
//! wire form is a little over 64 KiB) is copied into the partial-frame
//! buffer. Reported as bytes of input per second.
//!
//! `decode_copy`: the same, with every frame's bytes copied out as
//! [`Echo`](uds_reactor::Echo) copies them into the output buffer: the
//! cost per byte the server's framing pays end to end.
//!
//! `buffer`: the [`Buffer`] operations a connection performs per read:
//! push a chunk of replies and write it all (consume, which hands the
//! allocation to the spare and takes it back on the next push), push many
//! small replies then write them in pieces (compaction), and release.
//!
//! ```text
//! cargo bench --bench codec
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uds_reactor::buffer::Buffer;
use uds_reactor::codec::{self, Decoder};
use uds_reactor::Framing;

/// Bytes of input per iteration.
const STREAM: usize = 4 << 20;
/// The server's read size: how the stream is cut.
const CHUNK: usize = 64 << 10;
/// Payload sizes of one frame.
const SIZES: [(usize, &str); 3] = [(64, "64B"), (1 << 10, "1KiB"), (64 << 10, "64KiB")];

/// Up to `STREAM` bytes of whole frames of `payload` bytes each.
fn stream(framing: Framing, payload: usize) -> Vec<u8> {
    // Printable bytes without a `\n`, so lines end only where meant to.
    let payload: Vec<u8> = (0..payload).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::with_capacity(STREAM + payload.len() + codec::HEADER_LEN);
    loop {
        let len = out.len();
        codec::encode(framing, &payload, &mut out).expect("small frames encode");
        if out.len() > STREAM {
            out.truncate(len);
            return out;
        }
    }
}

/// Decodes `input` in `CHUNK`-byte reads, handing each frame to `sink`;
/// returns the payload bytes framed.
fn decode_all(
    framing: Framing,
    input: &[u8],
    spare: &mut Vec<u8>,
    mut sink: impl FnMut(&[u8]),
) -> usize {
    let mut decoder = Decoder::new(framing, 1 << 20);
    let mut framed = 0;
    for chunk in input.chunks(CHUNK) {
        let result = decoder.decode(chunk, spare, |frame| {
            framed += frame.payload().len();
            sink(frame.wire());
            true
        });
        result.expect("frames within max_frame");
    }
    decoder.decode_eof(spare, |frame| {
        framed += frame.payload().len();
        sink(frame.wire());
        true
    });
    framed
}

const FRAMINGS: [(Framing, &str); 3] = [
    (Framing::Raw, "raw"),
    (Framing::Line, "line"),
    (Framing::Length, "length"),
];

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for (framing, name) in FRAMINGS {
        for (payload, size) in SIZES {
            let input = stream(framing, payload);
            let mut spare = Vec::new();
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &input, |b, input| {
                b.iter(|| {
                    decode_all(framing, input, &mut spare, |wire| {
                        black_box(wire.len());
                    })
                })
            });
        }
    }
    group.finish();
}

fn decode_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_copy");
    for (framing, name) in FRAMINGS {
        for (payload, size) in SIZES {
            let input = stream(framing, payload);
            let mut spare = Vec::new();
            // One read's replies at most, as the server's output holds.
            let mut out = Vec::with_capacity(2 * CHUNK + 8);
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &input, |b, input| {
                b.iter(|| {
                    decode_all(framing, input, &mut spare, |wire| {
                        if out.len() + wire.len() > out.capacity() {
                            black_box(&out);
                            out.clear();
                        }
                        out.extend_from_slice(wire);
                    })
                })
            });
        }
    }
    group.finish();
}

fn buffer(c: &mut Criterion) {
    let mut group = c.benchmark_group("buffer");
    let chunk = vec![b'x'; CHUNK];
    let small = [b'y'; 64];
    let limit = 256 << 10;

    // One read's replies pushed, then written in one go: the allocation
    // goes to the spare and comes back on the next push.
    group.throughput(Throughput::Bytes(STREAM as u64));
    group.bench_function("push_consume_64KiB", |b| {
        let (mut buf, mut spare) = (Buffer::new(), Vec::new());
        b.iter(|| {
            for _ in 0..STREAM / CHUNK {
                buf.push(black_box(&chunk), limit, &mut spare);
                buf.consume(buf.len(), &mut spare);
            }
        })
    });

    // Many small replies, written back in short writes of 1000 bytes: the
    // consumed front is reclaimed by compaction when the buffer grows.
    group.bench_function("push64_consume_partial", |b| {
        let (mut buf, mut spare) = (Buffer::new(), Vec::new());
        b.iter(|| {
            for _ in 0..STREAM / CHUNK {
                for _ in 0..CHUNK / small.len() {
                    buf.push(black_box(&small), limit, &mut spare);
                }
                while !buf.is_empty() {
                    buf.consume(1000, &mut spare);
                }
            }
        })
    });

    // A 64-byte reply and its release, as an idle echo connection does
    // per request: the cost of taking and giving back the spare.
    group.throughput(Throughput::Bytes(small.len() as u64));
    group.bench_function("push64_release", |b| {
        let (mut buf, mut spare) = (Buffer::new(), Vec::new());
        b.iter(|| {
            buf.push(black_box(&small), limit, &mut spare);
            buf.release(&mut spare);
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, decode_copy, buffer
}
criterion_main!(benches);
