//! # uds-reactor
//!
//! A single-threaded, readiness-driven Unix-domain-socket server: one
//! thread, one `mio::Poll`, a nonblocking listener and its connections in a
//! `slab::Slab`. It serves `SOCK_STREAM` (raw, line or length framing),
//! `SOCK_SEQPACKET` and `SOCK_DGRAM` sockets, echoes by default, and runs
//! any [`Handler`] over whole frames.
//!
//! ```text
//!  socket ──read──▶ scratch ──▶ Decoder ──frames──▶ Handler ──replies──▶ output ──write──▶ socket
//!            (one, shared)     (partial frame      (your code)        (held only while
//!                               held only while                         the peer is slow)
//!                               incomplete)
//! ```
//!
//! The protocol core ([`codec`], [`buffer`], [`conn`]) never touches a
//! socket or the clock: the [`Server`] loop moves bytes between the
//! sockets and it, and fuzzers drive it directly.
//!
//! # Embedding
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::os::unix::net::UnixStream;
//! use uds_reactor::{Config, Context, Frame, Framing, Handler, Server};
//!
//! /// Answers each line with its length.
//! struct Count;
//!
//! impl Handler for Count {
//!     type State = ();
//!     fn open(&mut self, _: &mut Context<'_>) {}
//!     fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
//!         // Fails only for a frame no length field can carry (over 4 GiB).
//!         let _ = cx.send(frame.payload().len().to_string().as_bytes());
//!     }
//! }
//!
//! let path = std::env::temp_dir().join(format!("count-doc-{}.sock", std::process::id()));
//! let mut config = Config::new(&path);
//! config.framing = Framing::Line;
//! let server = Server::with_handler(config, Count)?;
//! let handle = server.handle();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut client = UnixStream::connect(&path)?;
//! client.write_all(b"hello\n")?;
//! let mut line = String::new();
//! BufReader::new(&client).read_line(&mut line)?;
//! assert_eq!(line, "5\n");
//!
//! handle.stop();
//! thread.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

//! # The handler as a platform
//!
//! A [`Handler`] does more than answer the frame in front of it, all on
//! the loop's one thread, with nothing allocated per event once warm:
//!
//! * **inputs**, in the order the loop calls them: for each connection
//!   [`open`](Handler::open) (it makes the state), then
//!   [`frame`](Handler::frame) per frame, [`timer`](Handler::timer) per
//!   timer of its own that fires, [`drained`](Handler::drained) after a
//!   refused push, and [`close`](Handler::close) exactly once, told why
//!   ([`CloseReason`]); beside them [`message`](Handler::message) for what
//!   other threads send through a [`Handle`] (a bounded queue and the
//!   mio waker: [`Handle::send`]) and [`server_timer`](Handler::server_timer);
//! * **outputs**, through the [`Context`] (this connection: reply, close,
//!   set a timer) or the [`Ctl`] it derefs to (the server: push to or
//!   disconnect any connection by [`ConnId`], send a datagram anywhere,
//!   server timers). They are queued and written as soon as the callback
//!   returns;
//! * **flow control**: a push that would take a connection past
//!   `--max-buffer` is refused ([`SendError::Full`]), and `drained`
//!   follows once it is down to half;
//! * **ids**: a [`ConnId`] names one connection for ever (a slot and a
//!   serial): a push to one that closed fails with [`SendError::Closed`]
//!   and never reaches a newer connection in the same slot; a closed
//!   connection's timers never fire and cost nothing;
//! * the handler comes back with [`Server::run_handler`].
//!
//! `examples/pubsub.rs` is a Redis-style pub/sub server built on it.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod buffer;
pub mod codec;
pub mod config;
pub mod conn;
mod ctl;
pub mod error;
pub mod fds;
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
mod metrics;
mod outbox;
pub mod server;
pub mod stats;
mod sys;
mod timers;

pub use codec::{Frame, FrameError};
pub use config::{Address, Config, Framing, Group, SocketType};
pub use conn::CloseReason;
pub use ctl::Ctl;
pub use error::Error;
pub use handler::{Closed, ConnId, Context, Echo, Handler, PeerCred};
pub use outbox::SendError;
pub use server::{Handle, MessageError, Program, Server};
pub use stats::Stats;
pub use timers::TimerId;

/// Raises this process's soft open-file limit (`RLIMIT_NOFILE`) to its
/// hard limit and returns the soft limit now in force (the old one if
/// raising it was refused).
///
/// This changes process-wide state (every thread, and children spawned
/// later, inherit the new limit), so it is the program's choice, made once
/// at startup, not a side effect to rely on when building a [`Server`]. A
/// server sizes its default connection cap (`max_connections: None`) from
/// the limit in force when it is built: call this first for the highest
/// cap allowed.
///
/// # Errors
///
/// `getrlimit(2)` failing.
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    sys::raise_nofile_limit()
}

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
