//! Where a handler's replies wait to be written: the encodings of output,
//! one per kind of socket. Pure data: the server writes what is here after
//! the handler's callback returns ("write eagerly, then wait").
//!
//! ```text
//! stream:    out = [ bytes as framed ......................... ]
//! seqpacket: out = [ len:u32 ne | message | len:u32 ne | message ... ]
//! dgram:     heads = [(len, addr #), ...]  addrs = [receiver ...]  bytes = [ payloads back to back ]
//! ```
//!
//! A message socket's output is a run of records (native-order `u32`
//! length, then the message), so one buffer holds any number of messages
//! and an empty message is a record like any other.
//!
//! # Write-through
//!
//! An echo's reply is a piece of the read being handled, and most of the
//! time the socket takes it at once: copying it into the output buffer
//! first would cost a copy of every byte for nothing. So while a
//! connection's output is empty, a reply that lies in the read being
//! handled is not copied but noted as a [`Through`] piece of it; on a
//! stream, replies that follow one another in the read (consecutive
//! frames echoed in order) extend the piece. The driver writes the piece
//! straight from its read buffer once the callbacks return, and keeps
//! (copies) only what the socket did not take
//! ([`Conn::handle_through`](crate::conn::Conn::handle_through)). Any
//! other reply copies the piece into the output first, so order holds.
//!
//! ```text
//! read:   [ frame 1 | frame 2 | frame 3 (partial) ]
//! piece:  [ echo 1  | echo 2  ]                     written from the read buffer
//! out:    (empty)                                   unless the socket was full
//! ```

use std::fmt;
use std::mem;
use std::ops::Range;
use std::os::fd::OwnedFd;

use socket2::SockAddr;

use crate::buffer::Buffer;
use crate::codec;
use crate::config::Framing;
use crate::fds::Attached;

/// Bytes of a message record's length field.
const RECORD_HEAD: usize = 4;

/// Why a reply could not be queued. Nothing was queued, and the
/// connection goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The reply cannot be framed: `len` bytes, more than the `max` the
    /// framing's length field (or a Unix message) can carry.
    TooLarge {
        /// Length of the reply's payload.
        len: usize,
        /// The largest the framing can carry (4 GiB - 1).
        max: usize,
    },
    /// The connection is not open: it closed, or it has finished and its
    /// `close` is about to come (its id is never reused, so a newer
    /// connection in its place is never reached by mistake).
    Closed,
    /// The push would take the connection's unsent output past its limit
    /// (`--max-buffer`); the handler decides: drop the message, disconnect
    /// the slow reader, or wait for [`Handler::drained`](crate::Handler::drained).
    Full {
        /// Bytes the connection had yet to write.
        pending: usize,
        /// The limit.
        limit: usize,
    },
    /// Not on this kind of socket (a datagram to an address on a
    /// connection socket, say).
    Unsupported,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge { len, max } => {
                write!(
                    f,
                    "a reply of {len} bytes is longer than a frame can be ({max})"
                )
            }
            SendError::Closed => f.write_str("the connection is closed"),
            SendError::Full { pending, limit } => write!(
                f,
                "the connection has {pending} bytes unsent, its limit is {limit}"
            ),
            SendError::Unsupported => f.write_str("not supported on this kind of socket"),
        }
    }
}

impl std::error::Error for SendError {}

/// The largest message a record (or a Unix socket) can carry.
const MAX_MESSAGE: usize = u32::MAX as usize;

/// A handler's output, as the kind of socket wants it.
pub(crate) enum Outbox<'a> {
    /// A byte stream, encoded by `framing`; `limit` is `out`'s growth
    /// limit (see [`Buffer::push`]).
    Stream {
        out: &'a mut Buffer,
        framing: Framing,
        limit: usize,
        /// Descriptors attached to `out`, made on first use.
        fds: &'a mut Option<Box<Attached>>,
        /// The read being handled, for write-through (in a callback for
        /// input only).
        through: Option<Through<'a>>,
    },
    /// A connected message socket: each reply one record.
    Messages {
        out: &'a mut Buffer,
        limit: usize,
        fds: &'a mut Option<Box<Attached>>,
        through: Option<Through<'a>>,
    },
    /// A datagram socket: each reply one datagram to `to`, the sender of
    /// the datagram being handled (queued as [`Datagrams::SENDER`]).
    Datagrams {
        queue: &'a mut Datagrams,
        to: &'a SockAddr,
        /// The datagram being handled, for write-through.
        through: Option<Through<'a>>,
    },
}

/// The read being handled, and which piece of it the replies queued so
/// far are (see [Write-through](self#write-through)).
pub(crate) struct Through<'a> {
    /// The bytes of the read.
    pub(crate) input: &'a [u8],
    /// The replies so far, as a range of `input`: `None` while there are
    /// none, or once they were copied into the output.
    pub(crate) piece: &'a mut Option<Range<usize>>,
    /// The descriptors attached to the piece's first byte (a reply with
    /// descriptors goes through only as the first of the piece).
    pub(crate) fds: &'a mut Vec<OwnedFd>,
}

impl Through<'_> {
    /// Takes `bytes` as (the rest of) the piece, if they lie in the input
    /// and, on a stream, right after the piece so far (a message socket's
    /// piece is one message). The caller has checked that nothing else is
    /// queued.
    fn take(&mut self, bytes: &[u8], messages: bool) -> bool {
        // Addresses, compared and never dereferenced: safe.
        let Some(start) = (bytes.as_ptr() as usize).checked_sub(self.input.as_ptr() as usize)
        else {
            return false;
        };
        let end = start + bytes.len();
        if end > self.input.len() {
            return false;
        }
        match self.piece {
            None => *self.piece = Some(start..end),
            Some(piece) if !messages && piece.end == start => piece.end = end,
            Some(_) => return false,
        }
        true
    }

    /// The piece's bytes, taken out of the piece (to be copied).
    fn take_piece(&mut self) -> Option<&[u8]> {
        self.piece.take().map(|r| &self.input[r])
    }

    /// Bytes in the piece.
    fn len(&self) -> usize {
        self.piece.as_ref().map_or(0, ExactSizeIterator::len)
    }
}

impl Outbox<'_> {
    /// Bytes of replies waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        match self {
            Outbox::Stream { out, through, .. } => {
                out.len() + through.as_ref().map_or(0, Through::len)
            }
            Outbox::Messages { out, through, .. } => {
                let piece = through.as_ref().filter(|t| t.piece.is_some());
                out.len() + piece.map_or(0, |t| RECORD_HEAD + t.len())
            }
            Outbox::Datagrams { queue, through, .. } => {
                queue.bytes() + through.as_ref().map_or(0, Through::len)
            }
        }
    }

    /// Queues `payload` framed (or verbatim) with the descriptors of
    /// `fds` attached to it: to its first byte on a stream, to the message
    /// otherwise; `fds` is left empty (whatever allocation it is left with
    /// is the caller's to reuse). On error nothing is queued and the
    /// descriptors are closed.
    pub(crate) fn send_fds(
        &mut self,
        payload: &[u8],
        framed: bool,
        fds: &mut Vec<OwnedFd>,
        spare: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        if fds.is_empty() {
            return self.send_as(payload, framed, spare);
        }
        if self.take_through_with(payload, framed, fds) {
            return Ok(());
        }
        // Descriptors ride on queued bytes, so nothing goes through: what
        // went through is copied before and, if this reply went through,
        // after (to the place it would have had anyway).
        let place = match self.copy_through(spare) {
            Err(e) => Err(e),
            Ok(()) => Ok(match self {
                Outbox::Stream { out, .. } | Outbox::Messages { out, .. } => out.len(),
                Outbox::Datagrams { queue, .. } => queue.len(),
            }),
        };
        let sent = place.and_then(|place| {
            self.send_as(payload, framed, spare)?;
            self.copy_through(spare)?;
            Ok(place)
        });
        let place = match sent {
            Ok(place) => place,
            Err(e) => {
                fds.clear();
                return Err(e);
            }
        };
        match self {
            Outbox::Stream { fds: at, .. } | Outbox::Messages { fds: at, .. } => {
                at.get_or_insert_with(Box::default).attach(place, fds);
            }
            Outbox::Datagrams { queue, .. } => queue.attach(place, fds),
        }
        Ok(())
    }

    /// Takes `payload`, verbatim, with `fds` as the write-through piece if
    /// it lies in the read and is the first thing queued (descriptors ride
    /// the piece's first byte); on a stream, only when the framing adds
    /// nothing. Whether it did (then `fds` is left empty).
    fn take_through_with(&mut self, payload: &[u8], framed: bool, fds: &mut Vec<OwnedFd>) -> bool {
        let (messages, out, at, t) = match self {
            Outbox::Stream {
                out,
                framing,
                fds: at,
                through: Some(t),
                ..
            } if !payload.is_empty() && (!framed || *framing == Framing::Raw) => {
                (false, out, at, t)
            }
            Outbox::Messages {
                out,
                fds: at,
                through: Some(t),
                ..
            } => (true, out, at, t),
            _ => return false,
        };
        let first = quiet(out, at) && t.piece.is_none() && t.fds.is_empty();
        if !first || !t.take(payload, messages) {
            return false;
        }
        crate::fds::move_all(t.fds, fds);
        true
    }

    /// [`send`](Self::send) if `framed`, else [`send_wire`](Self::send_wire).
    fn send_as(
        &mut self,
        payload: &[u8],
        framed: bool,
        spare: &mut Vec<u8>,
    ) -> Result<(), SendError> {
        match framed {
            true => self.send(payload, spare),
            false => self.send_wire(payload, spare),
        }
    }

    /// Queues `payload` as one frame of the connection's framing.
    pub(crate) fn send(&mut self, payload: &[u8], spare: &mut Vec<u8>) -> Result<(), SendError> {
        let header = match self {
            Outbox::Stream {
                framing: Framing::Line,
                ..
            } => None,
            Outbox::Stream {
                framing: Framing::Length,
                ..
            } => Some(codec::length_header(payload.len()).map_err(|_| too_large(payload))?),
            // Raw streams and messages add nothing: verbatim.
            _ => return self.send_wire(payload, spare),
        };
        // Framed bytes are not in the read: what went through goes first.
        self.copy_through(spare)?;
        if let Outbox::Stream { out, limit, .. } = self {
            match header {
                Some(header) => {
                    out.push(&header, *limit, spare);
                    out.push(payload, *limit, spare);
                }
                None => {
                    out.push(payload, *limit, spare);
                    out.push(b"\n", *limit, spare);
                }
            }
        }
        Ok(())
    }

    /// The datagram queue, on a datagram socket.
    pub(crate) fn datagrams(&mut self) -> Option<&mut Datagrams> {
        match self {
            Outbox::Datagrams { queue, .. } => Some(queue),
            _ => None,
        }
    }

    /// Queues `bytes` verbatim: no framing on a stream, one message on
    /// message sockets. A reply that lies in the read being handled, with
    /// nothing else queued, is taken as write-through instead of copied.
    pub(crate) fn send_wire(&mut self, bytes: &[u8], spare: &mut Vec<u8>) -> Result<(), SendError> {
        if self.take_through(bytes) {
            return Ok(());
        }
        self.copy_through(spare)?;
        match self {
            Outbox::Stream { out, limit, .. } => out.push(bytes, *limit, spare),
            Outbox::Messages { out, limit, .. } => push_record(out, bytes, *limit, spare)?,
            Outbox::Datagrams { queue, .. } => queue.push_to_sender(bytes)?,
        }
        Ok(())
    }

    /// Takes `bytes` as (the rest of) the write-through piece, if nothing
    /// else is queued and they lie in the read (see [`Through::take`]).
    fn take_through(&mut self, bytes: &[u8]) -> bool {
        match self {
            Outbox::Stream {
                out,
                fds,
                through: Some(t),
                ..
            } => !bytes.is_empty() && quiet(out, fds) && t.take(bytes, false),
            Outbox::Messages {
                out,
                fds,
                through: Some(t),
                ..
            } => quiet(out, fds) && t.take(bytes, true),
            Outbox::Datagrams {
                queue,
                through: Some(t),
                ..
            } => queue.is_empty() && t.take(bytes, true),
            _ => false,
        }
    }

    /// Copies the write-through piece, if any, into the output (before
    /// something that cannot go through is queued behind it).
    pub(crate) fn copy_through(&mut self, spare: &mut Vec<u8>) -> Result<(), SendError> {
        match self {
            Outbox::Stream {
                out,
                limit,
                fds,
                through: Some(t),
                ..
            } => copy_piece(out, fds, t, *limit, spare, false)?,
            Outbox::Messages {
                out,
                limit,
                fds,
                through: Some(t),
            } => copy_piece(out, fds, t, *limit, spare, true)?,
            Outbox::Datagrams {
                queue,
                through: Some(t),
                ..
            } => {
                if let Some(piece) = t.take_piece() {
                    queue.push_to_sender(piece)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Copies `t`'s piece (if any) into `out`, as one record on a message
/// socket (`record`), with the descriptors that ride it at its place.
fn copy_piece(
    out: &mut Buffer,
    fds: &mut Option<Box<Attached>>,
    t: &mut Through<'_>,
    limit: usize,
    spare: &mut Vec<u8>,
    record: bool,
) -> Result<(), SendError> {
    let place = out.len();
    if let Some(piece) = t.take_piece() {
        match record {
            true => push_record(out, piece, limit, spare)?,
            false => out.push(piece, limit, spare),
        }
    }
    attach(fds, place, t.fds);
    Ok(())
}

/// Attaches `fds` (if any) to the output at `place`.
pub(crate) fn attach(at: &mut Option<Box<Attached>>, place: usize, fds: &mut Vec<OwnedFd>) {
    if !fds.is_empty() {
        at.get_or_insert_with(Box::default).attach(place, fds);
    }
}

/// Whether nothing is queued: no bytes, no descriptors (a reply may then
/// go through).
fn quiet(out: &Buffer, fds: &Option<Box<Attached>>) -> bool {
    out.is_empty() && fds.as_deref().is_none_or(|at| at.held() == 0)
}

fn too_large(payload: &[u8]) -> SendError {
    SendError::TooLarge {
        len: payload.len(),
        max: MAX_MESSAGE,
    }
}

/// Appends one message record to `out`.
pub(crate) fn push_record(
    out: &mut Buffer,
    message: &[u8],
    limit: usize,
    spare: &mut Vec<u8>,
) -> Result<(), SendError> {
    let len = u32::try_from(message.len()).map_err(|_| too_large(message))?;
    out.push(&len.to_ne_bytes(), limit, spare);
    out.push(message, limit, spare);
    Ok(())
}

/// The first message of a run of records; empty when there is none.
pub(crate) fn first_record(records: &[u8]) -> &[u8] {
    match records {
        [a, b, c, d, rest @ ..] => {
            let len = u32::from_ne_bytes([*a, *b, *c, *d]) as usize;
            &rest[..len]
        }
        _ => &[],
    }
}

/// Bytes the first record of `records` takes, header included.
pub(crate) fn first_record_len(records: &[u8]) -> usize {
    RECORD_HEAD + first_record(records).len()
}

/// One waiting datagram: its payload's length in `bytes`, and its
/// receiver's place in `addrs` (or [`Datagrams::SENDER`]).
#[derive(Clone, Copy, Debug)]
struct Head {
    len: usize,
    addr: usize,
}

/// Datagram replies waiting to be sent, in order: one FIFO for every
/// receiver. Filled by the handler through its `Context`, emptied by the
/// datagram endpoint right after the callback (or later, when a receiver
/// was full).
///
/// Copy only what must wait: a reply to the sender being handled is
/// queued without its address (as [`SENDER`](Self::SENDER)); the endpoint
/// sends it with the address it still holds, and only a reply left
/// waiting gets its own copy ([`keep_sender`](Self::keep_sender)).
/// Nothing moves on the way out (cursors advance), and a datagram socket
/// is one per server, so the queue keeps its (small) allocations when
/// drained.
#[derive(Debug)]
pub(crate) struct Datagrams {
    /// Every reply queued since the queue was last empty. Invariant:
    /// `sent <= heads.len()`; the waiting ones are `heads[sent..]`.
    heads: Vec<Head>,
    /// Replies of `heads` already sent (or dropped).
    sent: usize,
    /// Receivers of waiting replies, one per run of replies to the same.
    addrs: Vec<SockAddr>,
    /// The payloads, back to back, in `heads` order; `bytes[start..]`
    /// are waiting.
    bytes: Vec<u8>,
    start: usize,
    /// Descriptors attached to waiting datagrams (places: datagrams
    /// ahead), made on first use.
    fds: Option<Box<Attached>>,
}

/// The allocation a drained queue keeps for its payloads; more is freed,
/// so a burst does not pin memory.
const KEEP: usize = 64 << 10;

/// What one queued datagram costs besides its payload (its head, and the
/// address it may need), so that `--max-buffer` bounds memory even for
/// empty ones.
const HEAD_COST: usize = mem::size_of::<Head>() + mem::size_of::<SockAddr>();

impl Datagrams {
    /// The receiver of a reply queued to "the sender being handled".
    pub(crate) const SENDER: usize = usize::MAX;

    /// An empty queue.
    pub(crate) fn new() -> Datagrams {
        Datagrams {
            heads: Vec::new(),
            sent: 0,
            addrs: Vec::new(),
            bytes: Vec::new(),
            start: 0,
            fds: None,
        }
    }

    /// Attaches the descriptors of `fds` to the datagram `place`
    /// datagrams from the head.
    pub(crate) fn attach(&mut self, place: usize, fds: &mut Vec<OwnedFd>) {
        self.fds.get_or_insert_with(Box::default).attach(place, fds);
    }

    /// The descriptors that go with the oldest waiting datagram.
    pub(crate) fn front_fds(&self) -> &[OwnedFd] {
        self.fds.as_deref().map_or(&[], Attached::at_head)
    }

    /// Descriptors held by waiting datagrams.
    pub(crate) fn held_fds(&self) -> usize {
        self.fds.as_deref().map_or(0, Attached::held)
    }

    /// Queues one datagram to the sender being handled.
    pub(crate) fn push_to_sender(&mut self, data: &[u8]) -> Result<(), SendError> {
        if data.len() > MAX_MESSAGE {
            return Err(too_large(data));
        }
        self.bytes.extend_from_slice(data);
        self.heads.push(Head {
            len: data.len(),
            addr: Self::SENDER,
        });
        Ok(())
    }

    /// Queues one datagram to `to`, any address.
    pub(crate) fn push_to(&mut self, to: &SockAddr, data: &[u8]) -> Result<(), SendError> {
        if data.len() > MAX_MESSAGE {
            return Err(too_large(data));
        }
        self.addrs.push(to.clone());
        self.bytes.extend_from_slice(data);
        self.heads.push(Head {
            len: data.len(),
            addr: self.addrs.len() - 1,
        });
        Ok(())
    }

    /// Gives the replies still waiting for `sender` (the one whose
    /// datagram was just handled) their own copy of its address, before
    /// the endpoint lets go of it.
    #[inline]
    pub(crate) fn keep_sender(&mut self, sender: &SockAddr) {
        if !self.is_empty() {
            self.keep_sender_waiting(sender);
        }
    }

    /// [`keep_sender`](Self::keep_sender) when replies wait.
    #[inline(never)]
    fn keep_sender_waiting(&mut self, sender: &SockAddr) {
        let mut kept = None;
        for head in &mut self.heads[self.sent..] {
            if head.addr == Self::SENDER {
                let at = *kept.get_or_insert_with(|| {
                    self.addrs.push(sender.clone());
                    self.addrs.len() - 1
                });
                head.addr = at;
            }
        }
    }

    /// The oldest waiting reply: receiver and payload. `sender` stands for
    /// [`SENDER`](Self::SENDER).
    pub(crate) fn front<'a>(
        &'a self,
        sender: Option<&'a SockAddr>,
    ) -> Option<(&'a SockAddr, &'a [u8])> {
        let head = self.heads.get(self.sent)?;
        let to = match head.addr {
            Self::SENDER => sender?,
            at => &self.addrs[at],
        };
        Some((to, self.bytes.get(self.start..self.start + head.len)?))
    }

    /// Drops the oldest waiting reply (sent, or undeliverable), closing
    /// this side's copies of its descriptors; returns how many it had.
    #[inline]
    pub(crate) fn pop(&mut self) -> usize {
        let Some(head) = self.heads.get(self.sent) else {
            return 0;
        };
        let fds = match &mut self.fds {
            Some(at) => at.advance(1),
            None => 0,
        };
        self.start += head.len;
        self.sent += 1;
        if self.sent == self.heads.len() {
            // Drained: start over, keeping the allocations (within reason).
            self.heads.clear();
            self.sent = 0;
            self.bytes.clear();
            if self.bytes.capacity() > KEEP {
                self.bytes.shrink_to(KEEP);
            }
            self.start = 0;
            self.addrs.clear();
        }
        fds
    }

    /// Replies waiting.
    pub(crate) fn len(&self) -> usize {
        self.heads.len() - self.sent
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Payload bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len() - self.start
    }

    /// Memory the waiting replies stand for, payload and bookkeeping: what
    /// `--max-buffer` limits.
    pub(crate) fn cost(&self) -> usize {
        self.bytes() + self.len() * HEAD_COST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_including_empty_messages() {
        let (mut out, mut spare) = (Buffer::new(), Vec::new());
        let mut fds = None;
        let mut outbox = Outbox::Messages {
            out: &mut out,
            limit: 1 << 20,
            fds: &mut fds,
            through: None,
        };
        for m in [&b"one"[..], b"", b"three"] {
            outbox.send(m, &mut spare).expect("fits");
        }
        let mut seen = Vec::new();
        while !out.is_empty() {
            seen.push(first_record(out.as_slice()).to_vec());
            let n = first_record_len(out.as_slice());
            out.consume(n, &mut spare);
        }
        assert_eq!(seen, [b"one".to_vec(), vec![], b"three".to_vec()]);
    }

    #[test]
    fn replies_from_the_read_go_through_until_something_must_be_copied() {
        let input = b"ab\ncd\nef\n";
        let (mut out, mut spare, mut fds, mut piece) = (Buffer::new(), Vec::new(), None, None);
        let mut through_fds = Vec::new();
        let mut outbox = Outbox::Stream {
            out: &mut out,
            framing: Framing::Line,
            limit: 1 << 20,
            fds: &mut fds,
            through: Some(Through {
                input,
                piece: &mut piece,
                fds: &mut through_fds,
            }),
        };
        // Consecutive frames echoed in order: one piece, nothing copied.
        outbox.send_wire(&input[0..3], &mut spare).expect("fits");
        outbox.send_wire(&input[3..6], &mut spare).expect("fits");
        assert_eq!(outbox.pending(), 6);
        // A framed reply cannot go through: the piece is copied first.
        outbox.send(b"x", &mut spare).expect("fits");
        // And from then on everything is copied, in order.
        outbox.send_wire(&input[6..9], &mut spare).expect("fits");
        assert_eq!(outbox.pending(), 11);
        assert_eq!(piece, None);
        assert_eq!(out.as_slice(), b"ab\ncd\nx\nef\n");
    }

    /// The outbox of one callback on a message socket that read `input`.
    fn messages<'a>(
        input: &'a [u8],
        out: &'a mut Buffer,
        fds: &'a mut Option<Box<Attached>>,
        piece: &'a mut Option<Range<usize>>,
        through_fds: &'a mut Vec<OwnedFd>,
    ) -> Outbox<'a> {
        Outbox::Messages {
            out,
            limit: 1 << 20,
            fds,
            through: Some(Through {
                input,
                piece,
                fds: through_fds,
            }),
        }
    }

    #[test]
    fn a_message_goes_through_alone() {
        let input = b"onetwo";
        let (mut out, mut spare, mut fds, mut piece) = (Buffer::new(), Vec::new(), None, None);
        let mut through_fds = Vec::new();
        let mut outbox = messages(input, &mut out, &mut fds, &mut piece, &mut through_fds);
        outbox.send_wire(&input[..3], &mut spare).expect("fits");
        assert_eq!(outbox.pending(), RECORD_HEAD + 3);
        assert_eq!((piece.clone(), out.len()), (Some(0..3), 0));
        // A second message, even the next bytes of the read, is a record
        // of its own: the first is copied as one before it.
        let mut outbox = messages(input, &mut out, &mut fds, &mut piece, &mut through_fds);
        outbox.send_wire(&input[3..], &mut spare).expect("fits");
        assert_eq!(piece, None);
        assert_eq!(first_record(out.as_slice()), b"one");
        out.consume(first_record_len(out.as_slice()), &mut spare);
        assert_eq!(first_record(out.as_slice()), b"two");
    }

    #[test]
    fn framed_sends_encode_as_the_framing_says() {
        let (mut out, mut spare, mut fds) = (Buffer::new(), Vec::new(), None);
        for framing in [Framing::Line, Framing::Length, Framing::Raw] {
            let mut outbox = Outbox::Stream {
                out: &mut out,
                framing,
                limit: 1 << 20,
                fds: &mut fds,
                through: None,
            };
            outbox.send(b"hi", &mut spare).expect("fits");
        }
        assert_eq!(out.as_slice(), b"hi\n\0\0\0\x02hihi");
    }

    #[test]
    fn datagrams_keep_order_and_their_receivers() {
        let (mut queue, mut spare) = (Datagrams::new(), Vec::new());
        let x = SockAddr::unix("/tmp/x").expect("addr");
        let y = SockAddr::unix("/tmp/y").expect("addr");
        let path = |to: &SockAddr| to.as_pathname().map(|p| p.display().to_string());
        // Two replies to x, one sent at once; the other waits, and keeps
        // x's address once x is no longer at hand.
        for m in [&b"a"[..], b""] {
            Outbox::Datagrams {
                queue: &mut queue,
                to: &x,
                through: None,
            }
            .send(m, &mut spare)
            .expect("fits");
        }
        let (to, data) = queue.front(Some(&x)).expect("queued");
        assert_eq!((path(to), data), (path(&x), &b"a"[..]));
        queue.pop();
        queue.keep_sender(&x);
        // Then y's reply queues behind it.
        Outbox::Datagrams {
            queue: &mut queue,
            to: &y,
            through: None,
        }
        .send(b"ccc", &mut spare)
        .expect("fits");
        assert_eq!((queue.len(), queue.bytes()), (2, 3));
        assert!(queue.cost() > 3);
        let mut seen = Vec::new();
        while let Some((to, data)) = queue.front(Some(&y)) {
            seen.push((path(to), data.to_vec()));
            queue.pop();
        }
        assert_eq!(seen, [(path(&x), vec![]), (path(&y), b"ccc".to_vec())]);
        assert!(queue.is_empty());
        assert_eq!(queue.cost(), 0);
    }
}
