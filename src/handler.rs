//! The handler API: what an embedding application implements to see whole
//! frames and answer them. [`Echo`] is the built-in handler.

use std::fmt;

use socket2::SockAddr;

use crate::buffer::Buffer;
use crate::codec::{self, Frame};
use crate::config::Framing;
pub use crate::sys::PeerCred;

/// Identifies a connection for as long as it is open. Ids are reused after
/// a connection closes (they are slab keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Application logic run by the server over whole frames.
///
/// The server calls [`open`](Handler::open) when a connection is accepted,
/// [`frame`](Handler::frame) for each complete frame in arrival order, and
/// [`close`](Handler::close) once when the connection goes away. For a
/// datagram socket there is one "connection" for the whole socket (id 0)
/// and each datagram is a frame whose replies go to its sender.
///
/// Everything runs on the server's one thread: a handler must not block.
///
/// # Examples
///
/// An uppercasing line server:
///
/// ```
/// use uds_reactor::{Config, Context, Framing, Frame, Handler, Server};
///
/// struct Upper;
///
/// impl Handler for Upper {
///     type State = ();
///     fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
///         cx.send(&frame.payload().to_ascii_uppercase());
///     }
/// }
///
/// let dir = std::env::temp_dir().join(format!("upper-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut config = Config::new(dir.join("s.sock"));
/// config.framing = Framing::Line;
/// let server = Server::with_handler(config, Upper).unwrap();
/// let handle = server.handle();
/// let thread = std::thread::spawn(move || server.run());
/// handle.stop();
/// thread.join().unwrap().unwrap();
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub trait Handler {
    /// Per-connection state, created with `Default` on accept.
    type State: Default;

    /// A connection was accepted (and passed the credential check).
    fn open(&mut self, state: &mut Self::State, cx: &mut Context<'_>) {
        let _ = (state, cx);
    }

    /// A whole frame arrived. Replies written through `cx` are encoded by
    /// the framing and sent in order.
    fn frame(&mut self, state: &mut Self::State, frame: Frame<'_>, cx: &mut Context<'_>);

    /// The connection is gone; its state is handed back for the last time.
    fn close(&mut self, state: Self::State, id: ConnId, peer: Option<PeerCred>) {
        let _ = (state, id, peer);
    }
}

/// The built-in handler: every frame goes back exactly as it came.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type State = ();

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        cx.send_wire(frame.wire());
    }
}

/// Where a [`Context`] puts replies.
pub(crate) enum Outbox<'a> {
    /// A byte stream, encoded by `framing`; `limit` is `out`'s growth
    /// limit (see [`Buffer::push`]).
    Stream {
        out: &'a mut Buffer,
        framing: Framing,
        limit: usize,
    },
    /// A connected message socket: each reply is one message, stored as a
    /// record (`u32` length in native order, then the bytes).
    Messages { out: &'a mut Buffer, limit: usize },
    /// A datagram socket: each reply is one datagram to `to`.
    Datagrams {
        queue: &'a mut crate::server::dgram::ReplyQueue,
        to: &'a SockAddr,
    },
}

/// A handler's view of its connection while it handles one event.
pub struct Context<'a> {
    pub(crate) id: ConnId,
    pub(crate) peer: Option<PeerCred>,
    pub(crate) outbox: Outbox<'a>,
    pub(crate) spare: &'a mut Vec<u8>,
    /// Set by [`close`](Self::close).
    pub(crate) close: bool,
    /// Replies sent during this event.
    pub(crate) sent: u64,
}

impl Context<'_> {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's credentials as the kernel reported them (SO_PEERCRED for
    /// connections, SCM_CREDENTIALS for each datagram); `None` where the
    /// kernel gave none.
    pub fn peer(&self) -> Option<PeerCred> {
        self.peer
    }

    /// For datagram sockets, the sender's address replies go to.
    pub fn reply_to(&self) -> Option<&SockAddr> {
        match &self.outbox {
            Outbox::Datagrams { to, .. } => Some(to),
            _ => None,
        }
    }

    /// Bytes of replies waiting to be written on this connection. A handler
    /// that produces more output than it receives can check it.
    pub fn pending(&self) -> usize {
        match &self.outbox {
            Outbox::Stream { out, .. } | Outbox::Messages { out, .. } => out.len(),
            Outbox::Datagrams { queue, .. } => queue.bytes(),
        }
    }

    /// Sends `payload` as one frame: with a `\n` for line framing, behind a
    /// length header for length framing, as one message on seqpacket and
    /// dgram sockets. A length-framed payload over 4 GiB cannot be encoded
    /// and closes the connection instead.
    pub fn send(&mut self, payload: &[u8]) {
        match &mut self.outbox {
            Outbox::Stream {
                out,
                framing: Framing::Line,
                limit,
            } => {
                out.push(payload, *limit, self.spare);
                out.push(b"\n", *limit, self.spare);
            }
            Outbox::Stream {
                out,
                framing: Framing::Length,
                limit,
            } => match codec::length_header(payload.len()) {
                Ok(header) => {
                    out.push(&header, *limit, self.spare);
                    out.push(payload, *limit, self.spare);
                }
                Err(_) => {
                    self.close = true;
                    return;
                }
            },
            _ => return self.send_wire(payload),
        }
        self.sent += 1;
    }

    /// Sends `bytes` verbatim: no framing is added on a stream; one message
    /// on seqpacket and dgram sockets. [`Echo`] uses it to return frames
    /// exactly as they came.
    pub fn send_wire(&mut self, bytes: &[u8]) {
        match &mut self.outbox {
            Outbox::Stream { out, limit, .. } => out.push(bytes, *limit, self.spare),
            Outbox::Messages { out, limit } => {
                // Messages over 4 GiB do not exist on Unix sockets.
                let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                out.push(&len.to_ne_bytes(), *limit, self.spare);
                out.push(&bytes[..len as usize], *limit, self.spare);
            }
            Outbox::Datagrams { queue, to } => queue.push(to, bytes),
        }
        self.sent += 1;
    }

    /// Closes the connection once the replies sent so far are written; no
    /// more frames are delivered. On a datagram socket it does nothing.
    pub fn close(&mut self) {
        self.close = true;
    }
}
