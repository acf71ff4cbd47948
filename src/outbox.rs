//! Where a handler's replies wait to be written: the encodings of output,
//! one per kind of socket. Pure data: the server writes what is here after
//! the handler's callback returns ("write eagerly, then wait").
//!
//! ```text
//! stream:    out = [ bytes as framed ......................... ]
//! seqpacket: out = [ len:u32 ne | message | len:u32 ne | message ... ]
//! dgram:     heads = [(addr, len), (addr, len) ...]   bytes = [ payloads back to back ]
//! ```
//!
//! A message socket's output is a run of records (native-order `u32`
//! length, then the message), so one buffer holds any number of messages
//! and an empty message is a record like any other.

use std::collections::VecDeque;
use std::fmt;
use std::mem;

use socket2::SockAddr;

use crate::buffer::Buffer;
use crate::codec::{self, HEADER_LEN};
use crate::config::Framing;

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
    },
    /// A connected message socket: each reply one record.
    Messages { out: &'a mut Buffer, limit: usize },
    /// A datagram socket: each reply one datagram to `to`.
    Datagrams {
        queue: &'a mut Datagrams,
        to: &'a SockAddr,
    },
}

impl Outbox<'_> {
    /// Bytes of replies waiting to be written.
    pub(crate) fn pending(&self) -> usize {
        match self {
            Outbox::Stream { out, .. } | Outbox::Messages { out, .. } => out.len(),
            Outbox::Datagrams { queue, .. } => queue.bytes(),
        }
    }

    /// Queues `payload` as one frame of the connection's framing.
    pub(crate) fn send(&mut self, payload: &[u8], spare: &mut Vec<u8>) -> Result<(), SendError> {
        match self {
            Outbox::Stream {
                out,
                framing: Framing::Line,
                limit,
            } => {
                out.push(payload, *limit, spare);
                out.push(b"\n", *limit, spare);
                Ok(())
            }
            Outbox::Stream {
                out,
                framing: Framing::Length,
                limit,
            } => {
                let header: [u8; HEADER_LEN] =
                    codec::length_header(payload.len()).map_err(|_| too_large(payload))?;
                out.push(&header, *limit, spare);
                out.push(payload, *limit, spare);
                Ok(())
            }
            _ => self.send_wire(payload, spare),
        }
    }

    /// Queues `bytes` verbatim: no framing on a stream, one message on
    /// message sockets.
    pub(crate) fn send_wire(&mut self, bytes: &[u8], spare: &mut Vec<u8>) -> Result<(), SendError> {
        match self {
            Outbox::Stream { out, limit, .. } => out.push(bytes, *limit, spare),
            Outbox::Messages { out, limit } => push_record(out, bytes, *limit, spare)?,
            Outbox::Datagrams { queue, to } => queue.push(to, bytes, spare)?,
        }
        Ok(())
    }
}

fn too_large(payload: &[u8]) -> SendError {
    SendError::TooLarge {
        len: payload.len(),
        max: MAX_MESSAGE,
    }
}

/// Appends one message record to `out`.
fn push_record(
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

/// What one queued datagram costs besides its payload (address and
/// length), so that `--max-buffer` bounds memory even for empty ones.
const HEAD_COST: usize = mem::size_of::<(SockAddr, usize)>();

/// Datagram replies waiting to be sent, in order: one FIFO for every
/// receiver. Filled by the handler through its `Context`, emptied by the
/// datagram endpoint. It holds memory only while replies wait (the
/// payload buffer goes back to the spare when drained).
#[derive(Debug)]
pub(crate) struct Datagrams {
    /// Receiver and payload length of each waiting reply.
    heads: VecDeque<(SockAddr, usize)>,
    /// The payloads, back to back, in `heads` order.
    bytes: Buffer,
    /// `bytes`' growth limit (see [`Buffer::push`]).
    limit: usize,
}

impl Datagrams {
    /// An empty queue whose payload buffer grows in steps up to `limit`.
    pub(crate) fn new(limit: usize) -> Datagrams {
        Datagrams {
            heads: VecDeque::new(),
            bytes: Buffer::new(),
            limit,
        }
    }

    /// Queues one datagram to `to`.
    fn push(&mut self, to: &SockAddr, data: &[u8], spare: &mut Vec<u8>) -> Result<(), SendError> {
        if data.len() > MAX_MESSAGE {
            return Err(too_large(data));
        }
        self.bytes.push(data, self.limit, spare);
        self.heads.push_back((to.clone(), data.len()));
        Ok(())
    }

    /// The oldest waiting reply: receiver and payload.
    pub(crate) fn front(&self) -> Option<(&SockAddr, &[u8])> {
        let (to, len) = self.heads.front()?;
        Some((to, &self.bytes.as_slice()[..*len]))
    }

    /// Drops the oldest waiting reply (sent, or undeliverable).
    pub(crate) fn pop(&mut self, spare: &mut Vec<u8>) {
        if let Some((_, len)) = self.heads.pop_front() {
            self.bytes.consume(len, spare);
        }
    }

    /// Replies waiting.
    pub(crate) fn len(&self) -> usize {
        self.heads.len()
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Payload bytes waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Memory the waiting replies stand for, payload and bookkeeping: what
    /// `--max-buffer` limits.
    pub(crate) fn cost(&self) -> usize {
        self.bytes.len() + self.heads.len() * HEAD_COST
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_including_empty_messages() {
        let (mut out, mut spare) = (Buffer::new(), Vec::new());
        let mut outbox = Outbox::Messages {
            out: &mut out,
            limit: 1 << 20,
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
    fn framed_sends_encode_as_the_framing_says() {
        let (mut out, mut spare) = (Buffer::new(), Vec::new());
        for framing in [Framing::Line, Framing::Length, Framing::Raw] {
            let mut outbox = Outbox::Stream {
                out: &mut out,
                framing,
                limit: 1 << 20,
            };
            outbox.send(b"hi", &mut spare).expect("fits");
        }
        assert_eq!(out.as_slice(), b"hi\n\0\0\0\x02hihi");
    }

    #[test]
    fn datagrams_keep_order_and_give_memory_back() {
        let (mut queue, mut spare) = (Datagrams::new(1 << 20), Vec::new());
        let to = SockAddr::unix("/tmp/x").expect("addr");
        for m in [&b"a"[..], b"", b"ccc"] {
            Outbox::Datagrams {
                queue: &mut queue,
                to: &to,
            }
            .send(m, &mut spare)
            .expect("fits");
        }
        assert_eq!((queue.len(), queue.bytes()), (3, 4));
        assert!(queue.cost() > 4);
        let mut seen = Vec::new();
        while let Some((_, data)) = queue.front() {
            seen.push(data.to_vec());
            queue.pop(&mut spare);
        }
        assert_eq!(seen, [b"a".to_vec(), vec![], b"ccc".to_vec()]);
        assert!(queue.is_empty());
        assert_eq!(queue.cost(), 0);
    }
}
