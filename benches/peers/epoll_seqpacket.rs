//! raw-epoll for seqpacket: the stream peer's loop (epoll.rs) on a
//! `SOCK_SEQPACKET` listener, with a read buffer as large as uds-reactor's
//! default `--max-frame` (1 MiB), as uds-reactor sizes its own for
//! message sockets.
//!
//! The loop needs no change: on seqpacket one `read` takes one message
//! (boundaries kept), and one `write` sends it whole or not at all, so
//! what a "short write" parks is the whole message, sent on EPOLLOUT.
//! Per ping-pong message: `epoll_wait`, `read`, `write`, as on a stream.
//!
//! Simplification the benchmark allows (its messages are 8 KiB at most):
//! a message longer than the buffer is truncated, not detected.

use std::path::Path;

use socket2::{Domain, SockAddr, Socket, Type};

/// uds-reactor's default `--max-frame`: the longest message served.
const MAX_MESSAGE: usize = 1 << 20;
/// Pending connections the listener queues.
const BACKLOG: i32 = 1024;

/// Binds a seqpacket listener on `path` and serves until the process is
/// killed.
///
/// # Panics
///
/// If the socket cannot be made, bound or put to listen.
pub fn serve(path: &Path) {
    let sock = Socket::new(Domain::UNIX, Type::SEQPACKET.cloexec(), None).expect("socket");
    sock.bind(&SockAddr::unix(path).expect("socket path"))
        .expect("bind peer socket");
    sock.listen(BACKLOG).expect("listen");
    sock.set_nonblocking(true).expect("nonblocking");
    super::epoll::serve_on(sock.into(), MAX_MESSAGE);
}
