//! The fan-out load: one publisher connection and N subscriber
//! connections to one topic, all driven by one mio loop on this thread
//! (pinned to the load CPU by the caller), the same code for every
//! server; only the [`Proto`] differs.
//!
//! Flow control: at most `pipeline` PUBs await their reply, and at most
//! `backlog` messages are published but not yet read by the slowest
//! subscriber, so the server's per-subscriber buffers stay bounded (a
//! PUB's reply says the message was queued, not delivered).
//!
//! Verification: every PUB's reply must count every subscriber; every
//! subscriber must receive every message, on the topic, in order (the
//! payload carries its sequence number), with the payload intact.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::path::Path;
use std::time::{Duration, Instant};

use mio::net::UnixStream;
use mio::{Events, Interest, Poll, Token};

use crate::codec::{Frame, Proto};

/// Bytes of each message's payload.
pub const PAYLOAD: usize = 64;
/// Digits of the sequence number at the payload's start.
const SEQ_DIGITS: usize = 16;
/// Read buffer per connection.
const READ_BUF: usize = 64 << 10;
/// How long connecting and subscribing may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the messages in flight at the deadline may take to arrive.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one poll waits (so the deadline is checked).
const POLL_MAX: Duration = Duration::from_millis(50);

/// What to run.
pub struct Config<'a> {
    pub path: &'a Path,
    pub proto: Proto,
    pub topic: &'a str,
    pub subscribers: usize,
    /// PUBs awaiting their reply, at most.
    pub pipeline: u64,
    /// Messages published but not yet read by the slowest subscriber,
    /// at most.
    pub backlog: u64,
}

/// One run's outcome (all verified).
pub struct Report {
    pub published: u64,
    /// published × subscribers, every one checked.
    pub delivered: u64,
    /// From the first PUB to the last message read.
    pub elapsed: Duration,
    /// This thread's CPU time over `elapsed`.
    pub driver_cpu: Duration,
}

/// The payload filler after the sequence number.
fn filler() -> [u8; PAYLOAD - SEQ_DIGITS] {
    let mut f = [0u8; PAYLOAD - SEQ_DIGITS];
    for (i, b) in f.iter_mut().enumerate() {
        *b = b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36];
    }
    f
}

/// Writes `seq` as SEQ_DIGITS decimal digits at the payload's start.
fn put_seq(payload: &mut [u8; PAYLOAD], mut seq: u64) {
    for d in payload[..SEQ_DIGITS].iter_mut().rev() {
        *d = b'0' + (seq % 10) as u8;
        seq /= 10;
    }
}

/// A connection's read side: bytes read but not yet parsed.
struct Reader {
    buf: Vec<u8>,
    len: usize,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            buf: vec![0; READ_BUF],
            len: 0,
        }
    }

    /// Reads until the socket is empty, handing each frame to `f`.
    ///
    /// A read shorter than the space offered ends it without the extra
    /// read that would return WouldBlock: a stream socket's read returns
    /// less only when its queue is empty, and bytes arriving after that
    /// raise a new edge-triggered event. That halves the driver's reads
    /// when the server sends little at a time.
    fn drain<S: Read>(
        &mut self,
        sock: &mut S,
        proto: Proto,
        mut f: impl FnMut(Frame<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let space = self.buf.len() - self.len;
            if space == 0 {
                return Err("a frame larger than the read buffer".into());
            }
            let n = match sock.read(&mut self.buf[self.len..]) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            };
            self.len += n;
            let mut at = 0;
            while let Some((frame, used)) = proto.parse(&self.buf[at..self.len])? {
                at += used;
                f(frame)?;
            }
            self.buf.copy_within(at..self.len, 0);
            self.len -= at;
            if n < space {
                return Ok(());
            }
        }
    }
}

/// A subscriber: its socket, reader and the next sequence number due.
struct Sub {
    sock: UnixStream,
    reader: Reader,
    next: u64,
}

/// Connected and subscribed connections, ready to [`Session::run`].
pub struct Session<'a> {
    cfg: &'a Config<'a>,
    publisher: UnixStream,
    subs: Vec<Sub>,
}

/// Connects `path` with blocking reads bounded by SETUP_TIMEOUT.
fn connect(path: &Path) -> Result<StdStream, String> {
    let s = StdStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(SETUP_TIMEOUT))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    Ok(s)
}

/// Blocking: reads `s` until one Ack frame; anything else is an error.
fn await_ack(s: &mut StdStream, proto: Proto) -> Result<(), String> {
    let mut buf = [0u8; 512];
    let mut len = 0;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while Instant::now() < deadline && len < buf.len() {
        let n = s
            .read(&mut buf[len..])
            .map_err(|e| format!("read subscribe reply: {e}"))?;
        if n == 0 {
            return Err("the server closed a subscriber at SUB".into());
        }
        len += n;
        match proto.parse(&buf[..len])? {
            None => continue,
            Some((Frame::Ack, used)) if used == len => return Ok(()),
            Some((Frame::Ack, _)) => return Err("bytes after the subscribe reply".into()),
            Some((other, _)) => return Err(format!("subscribe reply {other:?}")),
        }
    }
    Err("no subscribe reply".into())
}

impl<'a> Session<'a> {
    /// Opens the publisher and the subscribers, each subscribed (its
    /// confirmation read) before this returns.
    ///
    /// # Errors
    ///
    /// A failed connect, subscribe or reply.
    pub fn connect(cfg: &'a Config<'a>) -> Result<Session<'a>, String> {
        let mut std_subs = Vec::with_capacity(cfg.subscribers);
        let mut req = Vec::new();
        cfg.proto.subscribe(cfg.topic.as_bytes(), &mut req);
        for _ in 0..cfg.subscribers {
            let mut s = connect(cfg.path)?;
            s.write_all(&req).map_err(|e| format!("write SUB: {e}"))?;
            std_subs.push(s);
        }
        for s in &mut std_subs {
            await_ack(s, cfg.proto)?;
        }
        let nonblocking = |s: StdStream| -> Result<UnixStream, String> {
            s.set_nonblocking(true)
                .map_err(|e| format!("set_nonblocking: {e}"))?;
            Ok(UnixStream::from_std(s))
        };
        let publisher = nonblocking(connect(cfg.path)?)?;
        let subs = std_subs
            .into_iter()
            .map(|s| {
                Ok(Sub {
                    sock: nonblocking(s)?,
                    reader: Reader::new(),
                    next: 0,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Session {
            cfg,
            publisher,
            subs,
        })
    }

    /// Publishes for `secs`, then waits for everything in flight; the
    /// connections stay open until the session is dropped.
    ///
    /// # Errors
    ///
    /// A verification failure, a closed connection or a stall.
    pub fn run(&mut self, secs: f64) -> Result<Report, String> {
        let cfg = self.cfg;
        let n_subs = self.subs.len() as u64;
        let pub_token = Token(self.subs.len());
        let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
        for (i, s) in self.subs.iter_mut().enumerate() {
            poll.registry()
                .register(&mut s.sock, Token(i), Interest::READABLE)
                .map_err(|e| format!("register: {e}"))?;
        }
        poll.registry()
            .register(
                &mut self.publisher,
                pub_token,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        let mut events = Events::with_capacity(256);

        let topic = cfg.topic.as_bytes();
        let filler = filler();
        let mut payload = [0u8; PAYLOAD];
        payload[SEQ_DIGITS..].copy_from_slice(&filler);
        let mut pub_reader = Reader::new();
        let mut out: Vec<u8> = Vec::with_capacity(16 << 10);
        let mut out_at = 0;
        let (mut published, mut acked, mut slowest) = (0u64, 0u64, 0u64);

        let cpu_start = thread_cpu();
        let start = Instant::now();
        let deadline = start + Duration::from_secs_f64(secs);
        let give_up = deadline + DRAIN_TIMEOUT;
        loop {
            let now = Instant::now();
            let sending = now < deadline;
            if !sending && acked == published && slowest == published {
                break;
            }
            if now >= give_up {
                return Err(format!(
                    "stalled: {published} published, {acked} replies, slowest subscriber at {slowest}"
                ));
            }
            if sending {
                while published - acked < cfg.pipeline && published - slowest < cfg.backlog {
                    put_seq(&mut payload, published);
                    cfg.proto.publish(topic, &payload, &mut out);
                    published += 1;
                }
            }
            while out_at < out.len() {
                match self.publisher.write(&out[out_at..]) {
                    Ok(n) => out_at += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("write PUB: {e}")),
                }
            }
            if out_at == out.len() {
                out.clear();
                out_at = 0;
            }
            let wait = if sending {
                (deadline - now).min(POLL_MAX)
            } else {
                POLL_MAX
            };
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
            let mut read_subs = false;
            for ev in &events {
                let i = ev.token().0;
                if ev.token() == pub_token {
                    if !ev.is_readable() {
                        continue; // writable: the next turn writes
                    }
                    pub_reader
                        .drain(&mut self.publisher, cfg.proto, |f| match f {
                            Frame::Int(n) if n as u64 == n_subs => {
                                acked += 1;
                                Ok(())
                            }
                            other => Err(format!(
                                "PUB reply {other:?}, expected {n_subs} subscribers"
                            )),
                        })
                        .map_err(|e| format!("publisher: {e}"))?;
                    if acked > published {
                        return Err("more PUB replies than PUBs".into());
                    }
                } else {
                    read_subs = true;
                    let sub = &mut self.subs[i];
                    let next = &mut sub.next;
                    sub.reader
                        .drain(&mut sub.sock, cfg.proto, |f| {
                            check(f, topic, &filler, *next)?;
                            *next += 1;
                            Ok(())
                        })
                        .map_err(|e| format!("subscriber {i}: {e}"))?;
                }
            }
            if read_subs {
                slowest = self.subs.iter().map(|s| s.next).min().unwrap_or(published);
                if let Some(s) = self.subs.iter().position(|s| s.next > published) {
                    return Err(format!("subscriber {s} got an unpublished message"));
                }
            }
        }
        Ok(Report {
            published,
            delivered: published * n_subs,
            elapsed: start.elapsed(),
            driver_cpu: thread_cpu().saturating_sub(cpu_start),
        })
    }
}

/// Checks one frame delivered to a subscriber expecting `seq` next.
fn check(f: Frame<'_>, topic: &[u8], filler: &[u8], seq: u64) -> Result<(), String> {
    let Frame::Msg { topic: t, payload } = f else {
        return Err(format!("{f:?} where a message was due"));
    };
    if t != topic {
        return Err(format!("message on topic {:?}", String::from_utf8_lossy(t)));
    }
    if payload.len() != PAYLOAD || &payload[SEQ_DIGITS..] != filler {
        return Err(format!(
            "message {seq}: payload {:?}",
            String::from_utf8_lossy(payload)
        ));
    }
    let got = std::str::from_utf8(&payload[..SEQ_DIGITS])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    if got != Some(seq) {
        return Err(format!("message {got:?} where {seq} was due"));
    }
    Ok(())
}

/// This thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
