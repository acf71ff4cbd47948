//! The limit of one thread: level-triggered epoll written directly on
//! libc, one shared buffer, one `read` per readiness event and an
//! immediate `write` of what was read. A connection holds bytes only after
//! a short write: it then waits for EPOLLOUT alone (no reading, so the
//! peer is pushed back) and returns to EPOLLIN once flushed.
//!
//! Per ping-pong message on one connection: `epoll_wait`, `read`, `write`.
//! No allocation per event, no registration change unless a write was
//! short.
//!
//! The same loop serves seqpacket (epoll_seqpacket.rs): there a `read`
//! takes one message and a `write` sends all of it or nothing, so "the
//! bytes of a short write" are a whole message that could not be sent.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

/// The shared read buffer: as large as uds-reactor's reads (64 KiB), so
/// that what the comparison measures is the code, not the read size.
const BUF: usize = 64 << 10;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// Serves until the process is killed.
pub fn serve(listener: UnixListener) {
    listener.set_nonblocking(true).expect("nonblocking");
    serve_on(listener.into(), BUF);
}

/// The loop, on `listener` (a nonblocking listening socket of a
/// connected type), reading at most `buf_len` bytes at a time, until the
/// process is killed.
pub(super) fn serve_on(listener: OwnedFd, buf_len: usize) {
    let lfd = listener.as_raw_fd();
    let ep = epoll_for(lfd, libc::EPOLLIN as u32);
    let mut buf = vec![0u8; buf_len];
    // Unsent bytes per descriptor; empty (no allocation) almost always.
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
    loop {
        // SAFETY: `events` has EVENTS writable entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), EVENTS as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                accept_all(ep, lfd, &mut pending);
            } else if pending[fd as usize].is_empty() {
                on_readable(ep, fd, &mut buf, &mut pending[fd as usize]);
            } else {
                on_writable(ep, fd, &mut pending[fd as usize]);
            }
        }
    }
}

/// A new level-triggered epoll instance with `fd` registered for
/// `events`.
///
/// # Panics
///
/// If either call fails: the peer cannot serve, and its parent sees it
/// exit.
pub(super) fn epoll_for(fd: RawFd, events: u32) -> RawFd {
    // SAFETY: plain syscall, no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    ctl(ep, libc::EPOLL_CTL_ADD, fd, events).expect("register the socket");
    ep
}

fn accept_all(ep: RawFd, lfd: RawFd, pending: &mut Vec<Vec<u8>>) {
    accept_into(ep, lfd, pending, close);
}

/// Accepts every waiting connection into `conns` (indexed by descriptor,
/// grown as needed) and registers it for EPOLLIN; `close` undoes one
/// whose registration fails. Shared with the descriptor-passing peer.
pub(super) fn accept_into<T: Default>(
    ep: RawFd,
    lfd: RawFd,
    conns: &mut Vec<T>,
    close: fn(RawFd, &mut T),
) {
    loop {
        // SAFETY: null address pointers are allowed.
        let fd = unsafe {
            libc::accept4(
                lfd,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return; // EAGAIN, or out of descriptors: level-triggered, retried
        }
        if conns.len() <= fd as usize {
            conns.resize_with(fd as usize + 1, T::default);
        }
        if ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32).is_err() {
            close(fd, &mut conns[fd as usize]);
        }
    }
}

/// One read, one write; a short write parks the rest and waits for
/// EPOLLOUT.
fn on_readable(ep: RawFd, fd: RawFd, buf: &mut [u8], pending: &mut Vec<u8>) {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        if n == 0 || !would_block() {
            close(fd, pending);
        }
        return;
    }
    let n = n as usize;
    // SAFETY: `buf[..n]` is initialised.
    let w = unsafe { libc::write(fd, buf.as_ptr().cast(), n) };
    let w = if w < 0 {
        if !would_block() {
            return close(fd, pending);
        }
        0
    } else {
        w as usize
    };
    if w < n {
        pending.extend_from_slice(&buf[w..n]);
        if ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLOUT as u32).is_err() {
            close(fd, pending);
        }
    }
}

fn on_writable(ep: RawFd, fd: RawFd, pending: &mut Vec<u8>) {
    // SAFETY: `pending` is initialised for its length.
    let w = unsafe { libc::write(fd, pending.as_ptr().cast(), pending.len()) };
    if w < 0 {
        if !would_block() {
            close(fd, pending);
        }
        return;
    }
    pending.drain(..w as usize);
    if pending.is_empty() {
        *pending = Vec::new(); // give the memory back
        if ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32).is_err() {
            close(fd, pending);
        }
    }
}

fn close(fd: RawFd, pending: &mut Vec<u8>) {
    *pending = Vec::new();
    // SAFETY: `fd` is a descriptor we accepted and own; closing it also
    // removes it from the epoll set.
    unsafe { libc::close(fd) };
}

pub(super) fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd as u64,
    };
    // SAFETY: `ev` is a valid epoll_event for the call's duration.
    if unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(super) fn would_block() -> bool {
    io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}
