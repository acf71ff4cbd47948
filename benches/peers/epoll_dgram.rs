//! raw-epoll for datagrams: one bound `SOCK_DGRAM` socket registered
//! level-triggered, one shared buffer as large as uds-reactor's default
//! `--max-frame` (1 MiB), one `recvfrom` per readiness event and an
//! immediate `sendto` back to the sender's address.
//!
//! A reply is kept only when its send would block (replies its senders
//! have not read yet fill this socket's send buffer, or a receiver's
//! queue is full): it stays where it is, in the shared buffer, and the
//! loop stops reading (its registration goes to no events) until it is
//! sent. A datagram socket gets no "writable again" event for another
//! socket's full queue, so the send is retried when a short `epoll_wait`
//! timeout expires, as uds-reactor retries on a timer.
//!
//! Per ping-pong message: `epoll_wait`, `recvfrom`, `sendto`. Datagrams
//! longer than the buffer and those from unbound senders (no address to
//! answer) are dropped, as uds-reactor drops them.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use super::epoll::{ctl, epoll_for, would_block};

/// uds-reactor's default `--max-frame`: the longest datagram answered.
const MAX_DATAGRAM: usize = 1 << 20;
/// How long a reply that would block waits before it is tried again.
const RETRY_MS: i32 = 1;

/// A reply that could not be sent yet: `len` bytes at the start of the
/// shared buffer, to `addr`.
struct Parked {
    len: usize,
    addr: libc::sockaddr_un,
    addr_len: libc::socklen_t,
}

/// Serves on the bound socket `sock` until the process is killed.
pub fn serve(sock: UnixDatagram) {
    sock.set_nonblocking(true).expect("nonblocking");
    let sock = OwnedFd::from(sock);
    let fd = sock.as_raw_fd();
    let ep = epoll_for(fd, libc::EPOLLIN as u32);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut parked: Option<Parked> = None;
    let mut event = [libc::epoll_event { events: 0, u64: 0 }];
    loop {
        let timeout = if parked.is_some() { RETRY_MS } else { -1 };
        // SAFETY: `event` has one writable entry.
        let n = unsafe { libc::epoll_wait(ep, event.as_mut_ptr(), 1, timeout) };
        if let Some(p) = &parked {
            // Nothing was read since it was parked: it is still in `buf`.
            if send_to(fd, &buf[..p.len], &p.addr, p.addr_len).is_err() && would_block() {
                continue;
            }
            // Sent, or failed for good (the sender is gone): read again.
            parked = None;
            ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32).expect("reregister");
            continue;
        }
        if n <= 0 {
            continue; // EINTR
        }
        // SAFETY: an all-zero sockaddr_un is a valid (empty) address.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut addr_len = std::mem::size_of_val(&addr) as libc::socklen_t;
        // SAFETY: `buf` is writable for its length; `addr` and `addr_len`
        // describe a writable sockaddr_un. MSG_TRUNC: the datagram's full
        // length is returned, so an oversized one is seen.
        let len = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&raw mut addr).cast(),
                &mut addr_len,
            )
        };
        // An unbound sender's address is the family alone: no reply.
        let unnamed = addr_len as usize <= std::mem::size_of::<libc::sa_family_t>();
        if len < 0 || len as usize > buf.len() || unnamed {
            continue; // would block, or dropped
        }
        let len = len as usize;
        if send_to(fd, &buf[..len], &addr, addr_len).is_err() && would_block() {
            parked = Some(Parked {
                len,
                addr,
                addr_len,
            });
            // Level-triggered: stop reporting readable while it waits.
            ctl(ep, libc::EPOLL_CTL_MOD, fd, 0).expect("reregister");
        }
    }
}

/// One `sendto` of `msg` to `addr`.
fn send_to(
    fd: RawFd,
    msg: &[u8],
    addr: &libc::sockaddr_un,
    addr_len: libc::socklen_t,
) -> io::Result<()> {
    // SAFETY: `msg` is readable for its length; `addr` is a valid
    // sockaddr_un of which `addr_len` bytes are used.
    let n = unsafe {
        libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (addr as *const libc::sockaddr_un).cast(),
            addr_len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
