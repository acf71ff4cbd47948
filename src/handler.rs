//! The handler API: what an embedding application implements to see whole
//! frames and answer them. [`Echo`] is the built-in handler.
//!
//! This layer depends on no part of the server: a [`Context`] only fills
//! an outbox, and the server writes it once the callback returns.

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};

use socket2::SockAddr;

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::codec::Frame;
use crate::conn::CloseReason;
use crate::ctl::Ctl;
use crate::outbox::{Outbox, SendError};
use crate::timers::TimerId;

/// Names one connection, for its whole life and never again: it carries
/// the slab slot the connection lives in and a serial unique for the
/// server's life. Slots are reused, ids are not, so a handler that keeps
/// an id past the connection's close (in a subscriber list, or a message
/// from another thread) reaches nobody with it: pushes to it fail with
/// [`SendError::Closed`], and never land on a newer connection in the
/// same slot. (`close` is also always called before a slot is reused.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) key: usize,
    pub(crate) serial: u64,
}

impl ConnId {
    /// The slot: small, dense, reused after close; for tables indexed by
    /// connection (check [`Ctl::is_open`] or keep the whole id).
    pub fn slot(&self) -> usize {
        self.key
    }

    /// The serial: 1 for the server's first connection, then counting.
    pub fn serial(&self) -> u64 {
        self.serial
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.key)
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

/// Application logic run by the server over whole frames, and everything
/// else that happens on the loop's one thread.
///
/// # The calls, in order
///
/// For each connection: [`open`](Handler::open) once when it is accepted
/// (and passed the credential check), returning its state; then
/// [`frame`](Handler::frame) for each complete frame in arrival order,
/// [`timer`](Handler::timer) for each of its timers that fires, and
/// [`drained`](Handler::drained) when output that a push found full has
/// gone down; then [`close`](Handler::close) exactly once, with the state
/// and why it ended. Nothing about a connection is called after its
/// `close`, and its timers are gone. Beside the connections:
/// [`message`](Handler::message) for each message another thread sent
/// through a [`Handle`](crate::Handle), and
/// [`server_timer`](Handler::server_timer) for the server-wide timers.
///
/// Each call gets a [`Context`] (the connection it is about: reply to it,
/// close it) or a [`Ctl`] (the server: push to any connection by id, set
/// timers); a `Context` derefs to a `Ctl`. Replies and pushes are queued
/// and written as soon as the call returns. For a datagram socket there
/// is one "connection" for the whole socket and each datagram is a frame
/// whose replies go to its sender. `M` is the type of the messages other
/// threads send; `()` when there are none.
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
///     fn open(&mut self, _: &mut Context<'_>) {}
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
pub trait Handler<M = ()> {
    /// Per-connection state, made by [`open`](Handler::open).
    type State;

    /// Whether [`Context::peer`] is wanted. The server asks the kernel for
    /// a connection's credentials (one `getsockopt` per accept) only when
    /// this is `true` or an allow-list is set; [`Echo`] says `false`.
    const PEER_CREDENTIALS: bool = true;

    /// A connection was accepted (and passed the credential check): make
    /// its state. It may greet through `cx`, set timers, or close at once.
    fn open(&mut self, cx: &mut Context<'_>) -> Self::State;

    /// A whole frame arrived. Replies written through `cx` are encoded by
    /// the framing and sent in order.
    fn frame(&mut self, state: &mut Self::State, frame: Frame<'_>, cx: &mut Context<'_>);

    /// A timer this connection set ([`Context::set_timer`]) fired, with
    /// the token it was set with.
    fn timer(&mut self, state: &mut Self::State, token: u64, cx: &mut Context<'_>) {
        let _ = (state, token, cx);
    }

    /// A push to this connection was refused as [`SendError::Full`], and
    /// its unsent output has since gone down to half of `--max-buffer`:
    /// pushing may resume. Called once per refusal streak.
    fn drained(&mut self, state: &mut Self::State, cx: &mut Context<'_>) {
        let _ = (state, cx);
    }

    /// The connection is gone; its state is handed back for the last time,
    /// with its id, peer and why it ended. `ctl` can push to the others
    /// (not to this one: it is closed).
    fn close(&mut self, state: Self::State, closed: Closed, ctl: &mut Ctl<'_>) {
        let _ = (state, closed, ctl);
    }

    /// Another thread sent `message` through a [`Handle`](crate::Handle).
    fn message(&mut self, message: M, ctl: &mut Ctl<'_>) {
        let _ = (message, ctl);
    }

    /// A server-wide timer ([`Ctl::set_server_timer`]) fired.
    fn server_timer(&mut self, token: u64, ctl: &mut Ctl<'_>) {
        let _ = (token, ctl);
    }
}

/// How a connection ended, as [`Handler::close`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The connection's id (no longer open).
    pub id: ConnId,
    /// Its peer's credentials, if they were asked for.
    pub peer: Option<PeerCred>,
    /// Why it ended.
    pub reason: CloseReason,
}

/// The built-in handler: every frame goes back exactly as it came.
#[derive(Clone, Copy, Debug, Default)]
pub struct Echo;

impl Handler for Echo {
    type State = ();
    const PEER_CREDENTIALS: bool = false;

    fn open(&mut self, _: &mut Context<'_>) {}

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        // A received frame always fits back on the wire it came from.
        if cx.fds().is_empty() {
            let _ = cx.send_wire(frame.wire());
        } else {
            let fds = cx.take_fds();
            let _ = cx.send_wire_with_fds(frame.wire(), fds);
        }
    }
}

/// A handler's view of its connection while it handles one event; it
/// derefs to the [`Ctl`] of the whole server.
pub struct Context<'a> {
    id: ConnId,
    peer: Option<PeerCred>,
    outbox: Outbox<'a>,
    ctl: Ctl<'a>,
    /// The descriptors that came with the frame being handled.
    received: Option<&'a mut Vec<OwnedFd>>,
    /// The connection's socket, in `open` only (for the peer's identity).
    sock: Option<BorrowedFd<'a>>,
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
        received: Option<&'a mut Vec<OwnedFd>>,
        spare: &'a mut Vec<u8>,
        ctl: Ctl<'a>,
    ) -> Context<'a> {
        Context {
            id,
            peer,
            outbox,
            ctl,
            received,
            sock: None,
            spare,
            close: false,
            sent: 0,
        }
    }

    /// Lends the connection's socket, for [`peer_pidfd`](Self::peer_pidfd)
    /// and [`peer_groups`](Self::peer_groups) in `open`.
    pub(crate) fn with_socket(mut self, sock: Option<BorrowedFd<'a>>) -> Context<'a> {
        self.sock = sock;
        self
    }

    /// What the callback asked for: `(close, replies queued)`.
    pub(crate) fn outcome(&self) -> (bool, u64) {
        (self.close, self.sent)
    }

    /// Queues `payload` framed (or verbatim) with `fds` attached.
    pub(crate) fn send_fds_as(
        &mut self,
        payload: &[u8],
        framed: bool,
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        let sent = self.outbox.send_fds(payload, framed, &mut fds, self.spare);
        // The emptied vector goes back to hold the next frame's
        // descriptors (Echo's round trip then allocates nothing).
        if let Some(received) = self.received.as_deref_mut() {
            if received.capacity() == 0 {
                *received = fds;
            }
        }
        sent?;
        self.sent += 1;
        Ok(())
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

    /// A pidfd of the peer process (`SO_PEERPIDFD`, Linux 6.5+): unlike
    /// its pid, it cannot come to name another process once the peer
    /// exits, so it is the race-free way to signal, wait for or inspect
    /// it. Available in [`open`](Handler::open), where the connection's
    /// socket is at hand (one `getsockopt` per call); `None` in other
    /// callbacks, on datagram sockets, and where the kernel has no
    /// `SO_PEERPIDFD`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::os::fd::OwnedFd;
    /// use uds_reactor::{Context, Frame, Handler};
    ///
    /// /// Keeps each peer's pidfd for the life of its connection.
    /// struct Pids;
    ///
    /// impl Handler for Pids {
    ///     type State = Option<OwnedFd>;
    ///     fn open(&mut self, cx: &mut Context<'_>) -> Option<OwnedFd> {
    ///         cx.peer_pidfd()
    ///     }
    ///     fn frame(&mut self, _: &mut Option<OwnedFd>, _: Frame<'_>, _: &mut Context<'_>) {}
    /// }
    /// ```
    pub fn peer_pidfd(&self) -> Option<OwnedFd> {
        crate::sys::peer_pidfd(self.sock?).ok().flatten()
    }

    /// The peer's supplementary groups (`SO_PEERGROUPS`), as they were when
    /// it connected; in [`open`](Handler::open) only, as for
    /// [`peer_pidfd`](Self::peer_pidfd). (`--allow-gid` checks them too.)
    pub fn peer_groups(&self) -> Option<Vec<u32>> {
        crate::sys::peer_groups(self.sock?).ok()
    }

    /// For datagram sockets, the sender's address replies go to.
    pub fn reply_to(&self) -> Option<&SockAddr> {
        match &self.outbox {
            Outbox::Datagrams { to, .. } => Some(to),
            _ => None,
        }
    }

    /// The descriptors (`SCM_RIGHTS`) that came with the frame being
    /// handled, in the order they came; empty in other callbacks, and
    /// unless the server takes descriptors
    /// ([`Config::max_fds`](crate::Config::max_fds)). On a stream they
    /// came with the read that began inside this frame. Those the callback
    /// does not [`take`](Self::take_fds) are closed when it returns.
    pub fn fds(&self) -> &[OwnedFd] {
        self.received.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Takes the descriptors that came with the frame being handled: the
    /// handler's to keep, send on (with
    /// [`send_with_fds`](Self::send_with_fds) and the like) or drop, which
    /// closes them.
    pub fn take_fds(&mut self) -> Vec<OwnedFd> {
        self.received
            .as_deref_mut()
            .map(std::mem::take)
            .unwrap_or_default()
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
    ///     fn open(&mut self, _: &mut Context<'_>) {}
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

    /// As [`send`](Self::send), with `fds` attached: on a stream to the
    /// reply's first byte, on seqpacket and dgram to the message. The
    /// server holds them until they are written (they count towards
    /// nothing but the bytes they ride with), then closes its copies; if
    /// the connection ends first, they are closed unsent.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); nothing is queued and `fds` are closed.
    ///
    /// # Examples
    ///
    /// A handler that hands every client a descriptor for a shared file:
    ///
    /// ```
    /// use std::fs::File;
    /// use std::os::fd::OwnedFd;
    /// use uds_reactor::{Context, Frame, Handler};
    ///
    /// struct Share(File);
    ///
    /// impl Handler for Share {
    ///     type State = ();
    ///     fn open(&mut self, cx: &mut Context<'_>) {
    ///         if let Ok(copy) = self.0.try_clone() {
    ///             let _ = cx.send_with_fds(b"here", vec![OwnedFd::from(copy)]);
    ///         }
    ///     }
    ///     fn frame(&mut self, _: &mut (), _: Frame<'_>, _: &mut Context<'_>) {}
    /// }
    /// ```
    pub fn send_with_fds(&mut self, payload: &[u8], fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.send_fds_as(payload, true, fds)
    }

    /// As [`send_wire`](Self::send_wire), with `fds` attached (see
    /// [`send_with_fds`](Self::send_with_fds)). [`Echo`] uses it to return
    /// descriptors with the bytes they came with.
    ///
    /// # Errors
    ///
    /// As [`send_wire`](Self::send_wire); nothing is queued and `fds` are
    /// closed.
    pub fn send_wire_with_fds(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), SendError> {
        self.send_fds_as(bytes, false, fds)
    }

    /// Closes the connection once the replies queued in this callback
    /// (before or after this call) are written; no more frames are
    /// delivered. On a datagram socket it does nothing.
    pub fn close(&mut self) {
        self.close = true;
    }

    /// As [`Ctl::send_to`]; to this connection itself, the payload goes
    /// in order with its replies (before what is sent after it).
    ///
    /// # Errors
    ///
    /// As [`Ctl::send_to`].
    pub fn send_to(&mut self, id: ConnId, payload: &[u8]) -> Result<(), SendError> {
        if id != self.id {
            return self.ctl.send_to(id, payload);
        }
        self.check_room(payload.len() + self.ctl.overhead(true))?;
        self.send(payload)
    }

    /// As [`Ctl::send_to_with_fds`]; see [`send_to`](Self::send_to).
    ///
    /// # Errors
    ///
    /// As [`Ctl::send_to`]; nothing is queued and `fds` are closed.
    pub fn send_to_with_fds(
        &mut self,
        id: ConnId,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        if id != self.id {
            return self.ctl.send_to_with_fds(id, payload, fds);
        }
        self.check_room(payload.len() + self.ctl.overhead(true))?;
        self.send_with_fds(payload, fds)
    }

    /// As [`Ctl::send_wire_to`]; see [`send_to`](Self::send_to).
    ///
    /// # Errors
    ///
    /// As [`Ctl::send_to`].
    pub fn send_wire_to(&mut self, id: ConnId, bytes: &[u8]) -> Result<(), SendError> {
        if id != self.id {
            return self.ctl.send_wire_to(id, bytes);
        }
        self.check_room(bytes.len() + self.ctl.overhead(false))?;
        self.send_wire(bytes)
    }

    /// As [`Ctl::disconnect`]; this connection itself is closed as by
    /// [`close`](Self::close) (after what it owes is written).
    ///
    /// # Errors
    ///
    /// As [`Ctl::disconnect`].
    pub fn disconnect(&mut self, id: ConnId) -> Result<(), SendError> {
        if id != self.id {
            return self.ctl.disconnect(id);
        }
        self.close();
        Ok(())
    }

    /// Calls [`Handler::timer`] for this connection with `token` at
    /// `deadline` (or at the first turn after it). The timer goes when
    /// the connection closes: it never fires after `close`.
    ///
    /// # Examples
    ///
    /// A connection that must say something within five seconds:
    ///
    /// ```
    /// use std::time::Duration;
    /// use uds_reactor::{Context, Frame, Handler, TimerId};
    ///
    /// struct Deadline;
    ///
    /// impl Handler for Deadline {
    ///     type State = Option<TimerId>;
    ///     fn open(&mut self, cx: &mut Context<'_>) -> Option<TimerId> {
    ///         let at = cx.now() + Duration::from_secs(5);
    ///         Some(cx.set_timer(at, 0))
    ///     }
    ///     fn frame(&mut self, timer: &mut Option<TimerId>, _: Frame<'_>, cx: &mut Context<'_>) {
    ///         if let Some(t) = timer.take() {
    ///             cx.cancel_timer(t);
    ///         }
    ///     }
    ///     fn timer(&mut self, _: &mut Option<TimerId>, _: u64, cx: &mut Context<'_>) {
    ///         let _ = cx.send(b"too slow");
    ///         cx.close();
    ///     }
    /// }
    /// ```
    pub fn set_timer(&mut self, deadline: Instant, token: u64) -> TimerId {
        let id = self.id;
        self.ctl.set_conn_timer(id, deadline, token)
    }

    /// As [`Ctl::send_datagram`] (on a datagram socket, in order with the
    /// replies to the datagram being handled).
    ///
    /// # Errors
    ///
    /// As [`Ctl::send_datagram`].
    pub fn send_datagram(&mut self, to: &SockAddr, bytes: &[u8]) -> Result<(), SendError> {
        self.send_datagram_with_fds(to, bytes, Vec::new())
    }

    /// As [`Ctl::send_datagram_with_fds`] (in order with the replies to
    /// the datagram being handled).
    ///
    /// # Errors
    ///
    /// As [`Ctl::send_datagram`]; nothing is queued and `fds` are closed.
    pub fn send_datagram_with_fds(
        &mut self,
        to: &SockAddr,
        bytes: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Result<(), SendError> {
        let limit = self.ctl.max_buffer();
        // In order: a reply that went through goes first (on a connection
        // socket, where a datagram is refused, the copy costs nothing new).
        self.outbox.copy_through(self.spare)?;
        match self.outbox.datagrams() {
            Some(queue) => crate::ctl::queue_datagram(queue, limit, to, bytes, fds),
            None => self.ctl.send_datagram_with_fds(to, bytes, fds),
        }
    }

    /// [`SendError::Full`] if `len` more bytes would take this
    /// connection's output past the push limit (and then `drained` is
    /// owed, as for a push from elsewhere).
    fn check_room(&mut self, len: usize) -> Result<(), SendError> {
        let (pending, limit) = (self.outbox.pending(), self.ctl.max_buffer());
        if pending + len > limit {
            let id = self.id;
            self.ctl.refused(id);
            return Err(SendError::Full { pending, limit });
        }
        Ok(())
    }
}

impl<'a> Deref for Context<'a> {
    type Target = Ctl<'a>;
    fn deref(&self) -> &Ctl<'a> {
        &self.ctl
    }
}

impl<'a> DerefMut for Context<'a> {
    fn deref_mut(&mut self) -> &mut Ctl<'a> {
        &mut self.ctl
    }
}
