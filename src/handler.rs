//! The handler API: what an embedding application implements to see whole
//! frames and answer them. [`Echo`] is the built-in handler.
//!
//! This layer depends on no part of the server: a [`Context`] only fills
//! an outbox, and the server writes it once the callback returns.

use std::fmt;

use socket2::SockAddr;

use crate::codec::Frame;
use crate::outbox::{Outbox, SendError};

/// Identifies a connection for as long as it is open. Ids are reused after
/// a connection closes (they are slab keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub usize);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Credentials of a peer process, as the kernel reported them
/// (`SO_PEERCRED` for a connection, `SCM_CREDENTIALS` for a datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id of the peer (when it connected or sent).
    pub pid: i32,
    /// Effective user id of the peer.
    pub uid: u32,
    /// Effective group id of the peer.
    pub gid: u32,
}

impl fmt::Display for PeerCred {
    /// `pid=1 uid=2 gid=3`, as the server's log lines name a peer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid={} uid={} gid={}", self.pid, self.uid, self.gid)
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
///         // A line always fits: only a length frame over 4 GiB cannot.
///         let _ = cx.send(&frame.payload().to_ascii_uppercase());
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

    /// Whether [`Context::peer`] is wanted. The server asks the kernel for
    /// a connection's credentials (one `getsockopt` per accept) only when
    /// this is `true` or an allow-list is set; [`Echo`] says `false`.
    const PEER_CREDENTIALS: bool = true;

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
    const PEER_CREDENTIALS: bool = false;

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        // A received frame always fits back on the wire it came from.
        let _ = cx.send_wire(frame.wire());
    }
}

/// A handler's view of its connection while it handles one event.
pub struct Context<'a> {
    id: ConnId,
    peer: Option<PeerCred>,
    outbox: Outbox<'a>,
    /// The server's spare allocation, lent to an output buffer that needs
    /// memory (see [`crate::buffer`]).
    spare: &'a mut Vec<u8>,
    /// Set by [`close`](Self::close).
    close: bool,
    /// Replies queued during this event.
    sent: u64,
}

impl<'a> Context<'a> {
    /// The context for one callback on connection `id`.
    pub(crate) fn new(
        id: ConnId,
        peer: Option<PeerCred>,
        outbox: Outbox<'a>,
        spare: &'a mut Vec<u8>,
    ) -> Context<'a> {
        Context {
            id,
            peer,
            outbox,
            spare,
            close: false,
            sent: 0,
        }
    }

    /// What the callback asked for: `(close, replies queued)`.
    pub(crate) fn outcome(&self) -> (bool, u64) {
        (self.close, self.sent)
    }
}

impl Context<'_> {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's credentials as the kernel reported them (SO_PEERCRED for
    /// connections, SCM_CREDENTIALS for each datagram); `None` where the
    /// kernel gave none, or the handler said it wants none
    /// ([`Handler::PEER_CREDENTIALS`]).
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
        self.outbox.pending()
    }

    /// Queues `payload` as one frame: with a `\n` for line framing, behind
    /// a length header for length framing, as one message on seqpacket and
    /// dgram sockets. The server writes it once the callback returns.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] for a payload over 4 GiB - 1 on length
    /// framing or a message socket, which no frame can carry; nothing is
    /// queued and the connection goes on.
    ///
    /// # Examples
    ///
    /// ```
    /// use uds_reactor::{Context, Frame, Handler};
    ///
    /// struct Greeter;
    ///
    /// impl Handler for Greeter {
    ///     type State = ();
    ///     fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
    ///         if cx.send(b"hello").and_then(|()| cx.send(frame.payload())).is_err() {
    ///             cx.close();
    ///         }
    ///     }
    /// }
    /// ```
    pub fn send(&mut self, payload: &[u8]) -> Result<(), SendError> {
        self.outbox.send(payload, self.spare)?;
        self.sent += 1;
        Ok(())
    }

    /// Queues `bytes` verbatim: no framing is added on a stream; one
    /// message on seqpacket and dgram sockets. [`Echo`] uses it to return
    /// frames exactly as they came.
    ///
    /// # Errors
    ///
    /// [`SendError::TooLarge`] for a message over 4 GiB - 1 on a message
    /// socket; nothing is queued.
    pub fn send_wire(&mut self, bytes: &[u8]) -> Result<(), SendError> {
        self.outbox.send_wire(bytes, self.spare)?;
        self.sent += 1;
        Ok(())
    }

    /// Closes the connection once the replies queued in this callback
    /// (before or after this call) are written; no more frames are
    /// delivered. On a datagram socket it does nothing.
    pub fn close(&mut self) {
        self.close = true;
    }
}
