//! raw-epoll with descriptor passing: the loop of `epoll.rs` (its accept,
//! registration and error helpers), each read a `recvmsg` with room for
//! `MAX` descriptors and each echo a `sendmsg` carrying the ones that
//! came, closed once sent. The two calls are `uds_reactor::fds`'s, the
//! thin safe wrappers the server uses too, so both sides pay the same
//! for them. What one thread can do at best when every message carries
//! descriptors.
//!
//! Simplifications the benchmark allows (its messages are small and
//! answered one at a time): a short write parks the rest of the bytes and
//! sends the descriptors with the first write that goes through; a read
//! with more than `MAX` descriptors is not checked.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;

use uds_reactor::fds::{recv_with_fds, send_with_fds};

use super::epoll::{accept_into, ctl, epoll_for};

const BUF: usize = 64 << 10;
const EVENTS: usize = 256;
/// Descriptors one read may carry.
const MAX: usize = 8;

/// One connection's parked output.
#[derive(Default)]
struct Parked {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Serves until the process is killed.
pub fn serve(listener: UnixListener) {
    listener.set_nonblocking(true).expect("nonblocking");
    let lfd = listener.as_raw_fd();
    let ep = epoll_for(lfd, libc::EPOLLIN as u32);
    let mut buf = vec![0u8; BUF];
    let mut parked: Vec<Parked> = Vec::new();
    let mut fds = Vec::with_capacity(MAX);
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
                accept_into(ep, lfd, &mut parked, close);
            } else if parked[fd as usize].bytes.is_empty() {
                on_readable(ep, fd, &mut buf, &mut fds, &mut parked[fd as usize]);
            } else {
                on_writable(ep, fd, &mut parked[fd as usize]);
            }
        }
    }
}

/// The accepted connection `fd`, borrowed for one call.
fn sock(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: `fd` is a connection this loop accepted and has not closed;
    // the borrow is used only for the call it is made for, before any
    // close of it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn on_readable(ep: RawFd, fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>, parked: &mut Parked) {
    let n = match recv_with_fds(sock(fd), buf, MAX, fds) {
        Ok(got) if got.len > 0 => got.len,
        Ok(_) => return close(fd, parked), // EOF (any descriptors close with `fds`)
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Err(_) => return close(fd, parked),
    };
    let w = match send_with_fds(sock(fd), &buf[..n], fds) {
        Ok(w) => w,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(_) => {
            fds.clear();
            return close(fd, parked);
        }
    };
    if w == 0 {
        parked.fds.append(fds); // not sent: with the first write that goes
    } else {
        fds.clear(); // sent: close our copies
    }
    if w < n {
        parked.bytes.extend_from_slice(&buf[w..n]);
        if ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLOUT as u32).is_err() {
            close(fd, parked);
        }
    }
}

fn on_writable(ep: RawFd, fd: RawFd, parked: &mut Parked) {
    let w = match send_with_fds(sock(fd), &parked.bytes, &parked.fds) {
        Ok(w) => w,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
        Err(_) => return close(fd, parked),
    };
    if w > 0 {
        parked.fds.clear();
    }
    parked.bytes.drain(..w);
    if parked.bytes.is_empty() {
        parked.bytes = Vec::new();
        if ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32).is_err() {
            close(fd, parked);
        }
    }
}

fn close(fd: RawFd, parked: &mut Parked) {
    // Closes the held descriptors too.
    *parked = Parked::default();
    // SAFETY: a descriptor we accepted and own; closing it also removes it
    // from the epoll set.
    unsafe { libc::close(fd) };
}
