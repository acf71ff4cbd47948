//! The datagram side: one bound socket, each datagram a frame answered to
//! its sender, replies queued (bounded by `--max-buffer`) when the
//! receiver is full.
//!
//! A datagram socket gets no "writable again" event after a send to a full
//! receiver fails (the receiver's queue is not ours), so queued replies are
//! retried on a short timer. While the queue is over its limit nothing is
//! read: blocking senders slow down instead of replies being lost.
//!
//! The queue is one FIFO for every sender: a bound sender that never reads
//! its replies holds up the others once the queue is full, as it would
//! hold up a blocking server. Datagrams that cannot be answered (longer
//! than `--max-frame`, from an unbound sender, refused by the credential
//! check) are dropped, counted, and logged at warn at most once a second
//! per kind, with the sender's pid/uid/gid: `SO_PASSCRED` is always on so
//! the kernel attaches them.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::time::{Duration, Instant};

use log::{debug, warn};
use socket2::{SockAddr, Socket};

use super::RateLimited;
use crate::codec::Frame;
use crate::config::Config;
use crate::error::Error;
use crate::handler::{ConnId, Context, Handler, Outbox};
use crate::stats::Stats;
use crate::sys::{self, PeerCred};

/// Datagrams read per turn before the loop polls again.
const READS_PER_TURN: usize = 64;
/// How soon queued replies are retried after a receiver was full.
const RETRY: Duration = Duration::from_millis(2);
/// What a queued reply costs besides its payload (address, box, slot), so
/// that `--max-buffer` bounds memory even for empty datagrams.
const ENTRY_COST: usize = mem::size_of::<(SockAddr, Box<[u8]>)>();

/// Raises `sock`'s send buffer so messages up to `max_frame` can be sent,
/// and warns if the system caps it lower (`net.core.wmem_max`).
pub(crate) fn fit_messages(sock: &Socket, max_frame: usize) {
    match sys::fit_send_buffer(sock, max_frame) {
        Ok(room) if room < max_frame => warn!(
            "--max-frame {max_frame} exceeds the longest message the socket send buffer allows ({room} bytes; raise net.core.wmem_max): longer replies cannot be sent"
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot size the socket send buffer for --max-frame {max_frame}: {e}"),
    }
}

/// Replies waiting for their receivers. Owns the socket so a reply is sent
/// at once when nothing is queued ahead of it, and copied only when it
/// must wait.
#[derive(Debug)]
pub(crate) struct ReplyQueue {
    sock: Socket,
    pending: VecDeque<(SockAddr, Box<[u8]>)>,
    /// Payload bytes in `pending`.
    bytes: usize,
    sent_bytes: u64,
    dropped: u64,
}

impl ReplyQueue {
    /// Bytes of replies waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Memory the waiting replies hold, payload and bookkeeping: what
    /// `--max-buffer` limits.
    fn cost(&self) -> usize {
        self.bytes + self.pending.len() * ENTRY_COST
    }

    /// Sends `data` to `to` now if nothing waits ahead of it, else queues it.
    pub(crate) fn push(&mut self, to: &SockAddr, data: &[u8]) {
        if self.pending.is_empty() {
            match send(
                &self.sock,
                to,
                data,
                &mut self.sent_bytes,
                &mut self.dropped,
            ) {
                Sent::Done => return,
                Sent::Blocked => {}
            }
        }
        self.bytes += data.len();
        self.pending.push_back((to.clone(), data.into()));
    }

    /// Sends queued replies in order until one blocks.
    fn flush(&mut self) {
        while let Some((to, data)) = self.pending.front() {
            match send(
                &self.sock,
                to,
                data,
                &mut self.sent_bytes,
                &mut self.dropped,
            ) {
                Sent::Done => {
                    self.bytes -= data.len();
                    self.pending.pop_front();
                }
                Sent::Blocked => return,
            }
        }
    }
}

/// Sends one reply; counts what was sent or dropped.
fn send(
    sock: &Socket,
    to: &SockAddr,
    data: &[u8],
    sent_bytes: &mut u64,
    dropped: &mut u64,
) -> Sent {
    loop {
        match sock.send_to_with_flags(data, to, libc::MSG_NOSIGNAL) {
            Ok(n) => {
                *sent_bytes += n as u64;
                return Sent::Done;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Sent::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // The sender went away (ECONNREFUSED, ENOENT): nobody
                // is left to answer.
                debug!("reply to {}: {e}; dropped", show(to));
                *dropped += 1;
                return Sent::Done;
            }
        }
    }
}

enum Sent {
    Done,
    Blocked,
}

/// The datagram socket and its handler state.
pub(crate) struct Dgram<S> {
    queue: ReplyQueue,
    state: S,
    /// Datagrams may be waiting (an edge was seen and not drained).
    readable: bool,
    /// False once shutdown began.
    reading: bool,
    retry_at: Option<Instant>,
    max_frame: usize,
    max_buffer: usize,
    config: Config,
    /// One warning a second per kind of dropped datagram.
    oversized_log: RateLimited,
    unbound_log: RateLimited,
    rejected_log: RateLimited,
}

impl<S: Default> Dgram<S> {
    pub(crate) fn new(sock: Socket, config: &Config) -> Result<Dgram<S>, Error> {
        // Always on: the credential check needs it, and so does naming the
        // sender of a dropped datagram in the log.
        sock.set_passcred(true)
            .map_err(|e| Error::io("setsockopt SO_PASSCRED", "datagram socket", e))?;
        fit_messages(&sock, config.max_frame);
        Ok(Dgram {
            queue: ReplyQueue {
                sock,
                pending: VecDeque::new(),
                bytes: 0,
                sent_bytes: 0,
                dropped: 0,
            },
            state: S::default(),
            readable: true,
            reading: true,
            retry_at: None,
            max_frame: config.max_frame,
            max_buffer: config.max_buffer,
            config: config.clone(),
            oversized_log: RateLimited::default(),
            unbound_log: RateLimited::default(),
            rejected_log: RateLimited::default(),
        })
    }
}

impl<S> Dgram<S> {
    /// When queued replies should be retried.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Whether reading can go on without waiting for an event.
    pub(crate) fn has_work(&self) -> bool {
        self.reading && self.readable && self.queue.cost() < self.max_buffer
    }

    /// Whether no replies are waiting.
    pub(crate) fn is_drained(&self) -> bool {
        self.queue.pending.is_empty()
    }

    pub(crate) fn stop_reading(&mut self) {
        self.reading = false;
    }

    /// Flushes due replies and reads (bounded) while the queue has room.
    pub(crate) fn pump<H>(
        &mut self,
        now: Instant,
        handler: &mut H,
        scratch: &mut [u8],
        stats: &mut Stats,
        event: bool,
    ) where
        H: Handler<State = S>,
    {
        self.readable |= event;
        self.queue.flush();
        let max = self.max_frame.min(scratch.len());
        let mut spare = Vec::new();
        for _ in 0..READS_PER_TURN {
            if !self.has_work() {
                break;
            }
            let d = match sys::recv_dgram(&self.queue.sock, &mut scratch[..max], true) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("receive datagram: {e}");
                    self.readable = false;
                    break;
                }
            };
            stats.bytes_in += d.len as u64;
            let Some(from) = self.admit(&d, now, stats) else {
                stats.dropped += 1;
                continue;
            };
            stats.frames_in += 1;
            let mut cx = Context {
                id: ConnId(0),
                peer: d.cred,
                outbox: Outbox::Datagrams {
                    queue: &mut self.queue,
                    to: &from,
                },
                spare: &mut spare,
                close: false,
                sent: 0,
            };
            handler.frame(&mut self.state, Frame::raw(&scratch[..d.len]), &mut cx);
            stats.frames_out += cx.sent;
        }
        stats.bytes_out += mem::take(&mut self.queue.sent_bytes);
        stats.dropped += mem::take(&mut self.queue.dropped);
        self.retry_at = (!self.queue.pending.is_empty()).then(|| now + RETRY);
    }

    /// The address to answer `d` at, or `None` (logged, rate-limited) when
    /// it must be dropped: too long, no address, refused credentials.
    fn admit(&mut self, d: &sys::Datagram, now: Instant, stats: &mut Stats) -> Option<SockAddr> {
        let who = Who(d.cred);
        if d.truncated {
            if let Some(n) = self.oversized_log.hit(now) {
                warn!(
                    "dropped a datagram longer than --max-frame {} from {who} ({n} in the last second)",
                    self.max_frame
                );
            }
            return None;
        }
        if self.config.checks_credentials()
            && !d.cred.is_some_and(|c| self.config.allows(c.uid, c.gid))
        {
            stats.rejected_cred += 1;
            if let Some(n) = self.rejected_log.hit(now) {
                warn!("rejected a datagram from {who}: not in --allow-uid/--allow-gid ({n} in the last second)");
            }
            return None;
        }
        let from = d.from.clone();
        if from.is_none() {
            if let Some(n) = self.unbound_log.hit(now) {
                debug!("dropped a datagram from an unbound sender ({who}): no address to answer; the client must bind its socket ({n} in the last second)");
            }
        }
        from
    }

    /// Hands the state back to the handler.
    pub(crate) fn finish<H>(self, handler: &mut H, stats: &mut Stats)
    where
        H: Handler<State = S>,
    {
        stats.dropped += self.queue.pending.len() as u64;
        handler.close(self.state, ConnId(0), None);
    }
}

/// A sender's credentials for the log.
struct Who(Option<PeerCred>);

impl std::fmt::Display for Who {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(c) => write!(f, "pid={} uid={} gid={}", c.pid, c.uid, c.gid),
            None => f.write_str("pid=? uid=? gid=?"),
        }
    }
}

/// A Unix address for the log: a path, `@name`, or `(unnamed)`.
fn show(addr: &SockAddr) -> String {
    if let Some(path) = addr.as_pathname() {
        return path.display().to_string();
    }
    match addr.as_abstract_namespace() {
        Some(name) => format!("@{}", String::from_utf8_lossy(name)),
        None => "(unnamed)".into(),
    }
}
