//! One connection of the load generator (one after another, in churn
//! mode): its socket, its window of messages in flight, and the checks on
//! what comes back.
//!
//! Counters run over the slot's whole life; byte cursors over the current
//! connection. Message `k` of the slot is in flight from its admission in
//! [`Slot::send`] (when its send time is taken) until its last echoed byte
//! is checked.
//!
//! ```text
//!  completed <= admitted <= completed + pipeline,  admitted <= quota
//!  read <= written <= (admitted - base) * wire.len()
//! ```

use std::io::{self, ErrorKind, IoSlice, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{SockAddr, Socket};

use uds_reactor::fds::{recv_with_fds, send_with_fds, MAX_FDS};
use uds_reactor::{Address, SocketType};

use super::fds::{FdError, Passed};
use super::histogram::Histogram;
use super::wire::Wire;
use super::LoadError;
use crate::socket::{self, TempAddr};

/// Slices per `sendmsg` on a stream (three parts per message at most).
const IOVECS: usize = 48;

/// Settings and tallies every slot shares, lent to it for one call.
pub(crate) struct Cx<'a> {
    pub wire: &'a Wire,
    pub ty: SocketType,
    pub pipeline: u64,
    /// One message per connection, then close and reconnect.
    pub churn: bool,
    pub now: Instant,
    /// The shared read buffer (at least `wire.len() + 1` bytes).
    pub scratch: &'a mut [u8],
    pub tally: Tally<'a>,
    /// `--fds`: the files every message carries (`None` for none: plain
    /// reads and writes, as without descriptor passing).
    pub fds: Option<&'a Passed>,
    /// The shared vector descriptors are received into.
    pub fd_buf: &'a mut Vec<OwnedFd>,
    /// Connections opened, all slots.
    pub opened: &'a mut u64,
    pub registry: &'a Registry,
}

/// Where completed messages are counted.
pub(crate) struct Tally<'a> {
    pub latency: &'a mut Histogram,
    /// Latencies since the last progress line.
    pub interval: &'a mut Histogram,
    /// Messages completed, all slots.
    pub completed: &'a mut u64,
    /// Descriptors come back and checked, all slots.
    pub fds: &'a mut u64,
}

impl Tally<'_> {
    fn record(&mut self, since: Instant, now: Instant) {
        let ns = now.saturating_duration_since(since).as_nanos() as u64;
        self.latency.record(ns);
        self.interval.record(ns);
        *self.completed += 1;
    }
}

/// Why [`Slot::open`] did not connect.
pub(crate) enum Opened {
    Yes,
    /// The server's backlog is full: try again shortly.
    Retry,
}

pub(crate) struct Slot {
    id: usize,
    sock: Option<Socket>,
    /// Our bound address, for datagrams (kept for the slot's life).
    local: Option<TempAddr>,
    seed: u64,
    /// Messages this slot completes in all (lowered when time is up).
    pub quota: u64,
    admitted: u64,
    completed: u64,
    /// `completed` when the current connection opened.
    base: u64,
    /// Wire bytes written and checked on the current connection.
    written: u64,
    read: u64,
    /// Descriptors received on the current connection (`--fds`).
    fds_got: u64,
    /// Send time of message `k` at `k % pipeline`.
    sent_at: Box<[Instant]>,
    /// WRITABLE is registered.
    want_write: bool,
}

impl Slot {
    pub(crate) fn new(id: usize, quota: u64, pipeline: usize, now: Instant) -> Slot {
        Slot {
            id,
            sock: None,
            local: None,
            seed: (id as u64).wrapping_mul(977).wrapping_add(1),
            quota,
            admitted: 0,
            completed: 0,
            base: 0,
            written: 0,
            read: 0,
            fds_got: 0,
            sent_at: vec![now; pipeline].into_boxed_slice(),
            want_write: false,
        }
    }

    /// Every message of the quota is echoed and checked.
    pub(crate) fn is_done(&self) -> bool {
        self.completed >= self.quota
    }

    /// Messages sent and not yet fully echoed.
    pub(crate) fn outstanding(&self) -> u64 {
        self.admitted - self.completed
    }

    /// Admit no more messages: finish with those in flight.
    pub(crate) fn stop(&mut self) {
        self.quota = self.admitted;
        if self.is_done() {
            self.sock = None;
        }
    }

    /// Whether the slot is waiting for room to write.
    pub(crate) fn wants_write(&self) -> bool {
        self.want_write
    }

    /// Opens a connection and sends the first messages.
    pub(crate) fn open(
        &mut self,
        server: &Address,
        addr: &SockAddr,
        cx: &mut Cx<'_>,
    ) -> Result<Opened, LoadError> {
        let setup = |step, e| LoadError::Setup(uds_reactor::Error::io(step, server, e));
        let sock = socket::new_socket(cx.ty, true).map_err(|e| setup("socket", e))?;
        if cx.ty == SocketType::Dgram {
            self.local = Some(socket::bind_temp(&sock, server, "load").map_err(LoadError::Setup)?);
        }
        match sock.connect(addr) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Opened::Retry),
            Err(e) => return Err(setup("connect", e)),
        }
        let fd = sock.as_raw_fd();
        cx.registry
            .register(&mut SourceFd(&fd), Token(self.id), Interest::READABLE)
            .map_err(|e| setup("register", e))?;
        self.sock = Some(sock);
        self.want_write = false;
        self.base = self.completed;
        self.written = 0;
        self.read = 0;
        self.fds_got = 0;
        *cx.opened += 1;
        self.send(cx)?;
        Ok(Opened::Yes)
    }

    /// A readiness event: check what came back, send what the window
    /// allows. Returns whether the slot needs a new connection (churn).
    pub(crate) fn on_event(&mut self, readable: bool, cx: &mut Cx<'_>) -> Result<bool, LoadError> {
        if self.sock.is_none() {
            return Ok(false); // stale event of a closed connection
        }
        if readable && self.read < self.written {
            match cx.ty {
                SocketType::Stream => self.receive_stream(cx)?,
                _ => self.receive_messages(cx)?,
            }
        }
        if cx.churn && self.completed > self.base {
            // One echo per connection: close, and say whether to go on.
            self.sock = None;
            return Ok(!self.is_done());
        }
        if self.is_done() {
            self.sock = None;
            return Ok(false);
        }
        self.send(cx)?;
        Ok(false)
    }

    /// Admits what the window allows, then writes until done or full.
    pub(crate) fn send(&mut self, cx: &mut Cx<'_>) -> Result<(), LoadError> {
        let limit = if cx.churn {
            self.quota.min(self.base + 1)
        } else {
            self.quota
        };
        while self.admitted < limit && self.admitted - self.completed < cx.pipeline {
            self.sent_at[(self.admitted % cx.pipeline) as usize] = cx.now;
            self.admitted += 1;
        }
        let Some(sock) = self.sock.as_ref() else {
            return Ok(());
        };
        let len = cx.wire.len() as u64;
        let target = (self.admitted - self.base) * len;
        while self.written < target {
            // The message the next byte belongs to (not needed by a plain
            // stream write, which spans messages).
            let k = || self.base + self.written / len;
            let result = match (cx.ty, cx.fds) {
                (SocketType::Stream, None) => {
                    write_stream(sock, cx.wire, self.seed, self.base, self.written, target)
                }
                // A message's first byte carries the files; a write never
                // goes past its message, so the next one's first byte
                // starts a write of its own.
                (SocketType::Stream, Some(files)) if self.written.is_multiple_of(len) => {
                    let first = cx.wire.segment(self.seed, k(), 0);
                    send_with_fds(sock, first, files.files())
                }
                (SocketType::Stream, Some(_)) => {
                    let end = target.min((self.written / len + 1) * len);
                    write_stream(sock, cx.wire, self.seed, self.base, self.written, end)
                }
                (_, None) => {
                    socket::send(sock, cx.wire.payload(self.seed, k())).map(|_| len as usize)
                }
                (_, Some(files)) => {
                    send_with_fds(sock, cx.wire.payload(self.seed, k()), files.files())
                        .map(|_| len as usize)
                }
            };
            match result {
                Ok(n) => self.written += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io("send", e)),
            }
        }
        let want = self.written < target;
        if want != self.want_write {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let fd = sock.as_raw_fd();
            cx.registry
                .reregister(&mut SourceFd(&fd), Token(self.id), interest)
                .map_err(|e| self.io("register", e))?;
            self.want_write = want;
        }
        Ok(())
    }

    /// Reads and checks a stream until it would block, a short read shows
    /// it drained, or nothing more is owed.
    fn receive_stream(&mut self, cx: &mut Cx<'_>) -> Result<(), LoadError> {
        while self.read < self.written {
            let Some(sock) = self.sock.as_ref() else {
                return Ok(());
            };
            let mut lost = false;
            let got = match cx.fds {
                None => (&*sock).read(cx.scratch),
                Some(_) => recv_with_fds(sock, &mut *cx.scratch, MAX_FDS, cx.fd_buf).map(|got| {
                    lost = got.fds_lost;
                    got.len
                }),
            };
            if let Some(files) = cx.fds {
                self.take_stream_fds(cx, files, lost)?;
            }
            let n = match got {
                Ok(0) => return Err(self.closed()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io("read", e)),
            };
            let full = n == cx.scratch.len();
            let mut data = &cx.scratch[..n];
            let len = cx.wire.len() as u64;
            while !data.is_empty() {
                if self.read >= self.written {
                    return Err(LoadError::Extra {
                        conn: self.id,
                        bytes: data.len(),
                    });
                }
                let k = self.base + self.read / len;
                let at = (self.read % len) as usize;
                let want = cx.wire.segment(self.seed, k, at);
                let n = want.len().min(data.len());
                if data[..n] != want[..n] {
                    let i = (0..n).find(|&i| data[i] != want[i]).unwrap_or(0);
                    return Err(LoadError::Verify {
                        conn: self.id,
                        message: k,
                        offset: at + i,
                        expected: want[i],
                        got: data[i],
                    });
                }
                data = &data[n..];
                self.read += n as u64;
                if self.read.is_multiple_of(len) {
                    self.complete(k, cx.pipeline, cx.now, &mut cx.tally);
                }
            }
            if let Some(files) = cx.fds {
                // Every message whose echo has begun has had its set.
                let owed = self.read.div_ceil(len) * files.len() as u64;
                if self.fds_got < owed {
                    let k = self.base + self.read.div_ceil(len) - 1;
                    let count = FdError::Count {
                        want: owed,
                        got: self.fds_got,
                    };
                    return Err(self.fd_error(k, count));
                }
            }
            // A short read drained the socket, unless it stopped at
            // descriptors: a read ends after the bytes that carry them.
            if !full && cx.fds.is_none() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Receives and checks whole messages until nothing more is owed or
    /// the socket would block.
    fn receive_messages(&mut self, cx: &mut Cx<'_>) -> Result<(), LoadError> {
        let len = cx.wire.len();
        while self.read < self.written {
            let Some(sock) = self.sock.as_ref() else {
                return Ok(());
            };
            let k = self.base + self.read / len as u64;
            let buf = &mut cx.scratch[..len + 1];
            let mut lost = false;
            let got = match cx.fds {
                None => socket::recv_message(sock, buf),
                Some(_) => recv_with_fds(sock, buf, MAX_FDS, cx.fd_buf).map(|got| {
                    lost = got.fds_lost;
                    (got.len, got.full_len > got.len || got.len == len + 1)
                }),
            };
            let (n, truncated) = match got {
                Ok((0, _)) if cx.ty == SocketType::Seqpacket => return Err(self.closed()),
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(self.io("read", e)),
            };
            if let Some(files) = cx.fds {
                self.take_message_fds(k, cx, files, lost)?;
            }
            if n != len || truncated {
                return Err(LoadError::Length {
                    conn: self.id,
                    message: k,
                    expected: len,
                    got: n,
                });
            }
            let want = cx.wire.payload(self.seed, k);
            if let Some(i) = (0..n).find(|&i| cx.scratch[i] != want[i]) {
                return Err(LoadError::Verify {
                    conn: self.id,
                    message: k,
                    offset: i,
                    expected: want[i],
                    got: cx.scratch[i],
                });
            }
            self.read += len as u64;
            self.complete(k, cx.pipeline, cx.now, &mut cx.tally);
        }
        Ok(())
    }

    /// Checks the descriptors a stream read took (in order over the
    /// connection), counts and closes them.
    fn take_stream_fds(
        &mut self,
        cx: &mut Cx<'_>,
        files: &Passed,
        lost: bool,
    ) -> Result<(), LoadError> {
        let len = cx.wire.len() as u64;
        let k = self.base + self.read / len;
        let came = cx.fd_buf.len() as u64;
        // No more than the messages begun on the wire carried.
        let sent = self.written.div_ceil(len) * files.len() as u64;
        let error = if lost {
            Some(FdError::Lost)
        } else if self.fds_got + came > sent {
            Some(FdError::Count {
                want: sent,
                got: self.fds_got + came,
            })
        } else {
            None
        };
        if let Some(e) = error {
            cx.fd_buf.clear();
            return Err(self.fd_error(k, e));
        }
        files
            .check(self.fds_got, cx.fd_buf)
            .map_err(|e| self.fd_error(k, e))?;
        self.fds_got += came;
        *cx.tally.fds += came;
        Ok(())
    }

    /// Checks the descriptors that came with message `k`'s echo (exactly
    /// the K files, in order), counts and closes them.
    fn take_message_fds(
        &mut self,
        k: u64,
        cx: &mut Cx<'_>,
        files: &Passed,
        lost: bool,
    ) -> Result<(), LoadError> {
        let came = cx.fd_buf.len() as u64;
        let error = if lost {
            Some(FdError::Lost)
        } else if came != files.len() as u64 {
            Some(FdError::Count {
                want: files.len() as u64,
                got: came,
            })
        } else {
            None
        };
        if let Some(e) = error {
            cx.fd_buf.clear();
            return Err(self.fd_error(k, e));
        }
        files.check(0, cx.fd_buf).map_err(|e| self.fd_error(k, e))?;
        *cx.tally.fds += came;
        Ok(())
    }

    fn fd_error(&self, message: u64, error: FdError) -> LoadError {
        LoadError::Fds {
            conn: self.id,
            message,
            error,
        }
    }

    fn complete(&mut self, k: u64, pipeline: u64, now: Instant, tally: &mut Tally<'_>) {
        tally.record(self.sent_at[(k % pipeline) as usize], now);
        self.completed += 1;
    }

    fn closed(&self) -> LoadError {
        LoadError::Closed {
            conn: self.id,
            completed: self.completed,
            outstanding: self.outstanding(),
        }
    }

    fn io(&self, step: &'static str, source: io::Error) -> LoadError {
        if matches!(
            source.kind(),
            ErrorKind::BrokenPipe | ErrorKind::ConnectionReset
        ) {
            return self.closed();
        }
        LoadError::Io {
            conn: self.id,
            step,
            source,
        }
    }
}

/// One `sendmsg` of the stream bytes `written..target` of the current
/// connection, straight from the pattern (no copy).
fn write_stream(
    sock: &Socket,
    wire: &Wire,
    seed: u64,
    base: u64,
    written: u64,
    target: u64,
) -> io::Result<usize> {
    let len = wire.len() as u64;
    let mut slices = [IoSlice::new(&[]); IOVECS];
    let mut count = 0;
    let mut at = written;
    while at < target && count < IOVECS {
        let seg = wire.segment(seed, base + at / len, (at % len) as usize);
        slices[count] = IoSlice::new(seg);
        count += 1;
        at += seg.len() as u64;
    }
    socket::send_vectored(sock, &slices[..count])
}
