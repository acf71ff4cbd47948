//! raw-epoll with descriptor passing: the same loop as `epoll.rs`, each
//! read a `recvmsg` with room for `MAX` descriptors and each echo a
//! `sendmsg` carrying the ones that came, closed once sent. What one
//! thread can do at best when every message carries descriptors.
//!
//! Simplifications the benchmark allows (its messages are small and
//! answered one at a time): a short write parks the rest of the bytes and
//! sends the descriptors with the first write that goes through; a read
//! with more than `MAX` descriptors is not checked.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;

const BUF: usize = 64 << 10;
const EVENTS: usize = 256;
/// Descriptors one read may carry.
const MAX: usize = 8;

/// One connection's parked output.
#[derive(Default)]
struct Parked {
    bytes: Vec<u8>,
    fds: Vec<RawFd>,
}

/// Serves until the process is killed.
pub fn serve(listener: UnixListener) {
    listener.set_nonblocking(true).expect("nonblocking");
    let lfd = listener.as_raw_fd();
    // SAFETY: plain syscall, no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1: {}", io::Error::last_os_error());
    ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32).expect("register listener");
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
                accept_all(ep, lfd, &mut parked);
            } else if parked[fd as usize].bytes.is_empty() {
                on_readable(ep, fd, &mut buf, &mut fds, &mut parked[fd as usize]);
            } else {
                on_writable(ep, fd, &mut parked[fd as usize]);
            }
        }
    }
}

fn accept_all(ep: RawFd, lfd: RawFd, parked: &mut Vec<Parked>) {
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
            return;
        }
        if parked.len() <= fd as usize {
            parked.resize_with(fd as usize + 1, Parked::default);
        }
        if ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32).is_err() {
            close(fd, &mut parked[fd as usize]);
        }
    }
}

/// Control bytes for `MAX` descriptors, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

fn on_readable(ep: RawFd, fd: RawFd, buf: &mut [u8], fds: &mut Vec<RawFd>, parked: &mut Parked) {
    let n = recv_fds(fd, buf, fds);
    if n <= 0 {
        for f in fds.drain(..) {
            // SAFETY: received descriptors are ours to close.
            unsafe { libc::close(f) };
        }
        if n == 0 || !would_block() {
            close(fd, parked);
        }
        return;
    }
    let n = n as usize;
    let w = send_fds(fd, &buf[..n], fds);
    let w = if w < 0 {
        if !would_block() {
            parked.fds.append(fds);
            return close(fd, parked);
        }
        0
    } else {
        w as usize
    };
    if w == 0 {
        parked.fds.append(fds); // not sent: with the first write that goes
    } else {
        close_all(fds);
    }
    if w < n {
        parked.bytes.extend_from_slice(&buf[w..n]);
        if ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLOUT as u32).is_err() {
            close(fd, parked);
        }
    }
}

fn on_writable(ep: RawFd, fd: RawFd, parked: &mut Parked) {
    let w = send_fds(fd, &parked.bytes, &parked.fds);
    if w < 0 {
        if !would_block() {
            close(fd, parked);
        }
        return;
    }
    if w > 0 {
        close_all(&mut parked.fds);
    }
    parked.bytes.drain(..w as usize);
    if parked.bytes.is_empty() {
        parked.bytes = Vec::new();
        if ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32).is_err() {
            close(fd, parked);
        }
    }
}

/// `recvmsg` into `buf`, the descriptors that came into `fds`.
fn recv_fds(fd: RawFd, buf: &mut [u8], fds: &mut Vec<RawFd>) -> isize {
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is arithmetic.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE((MAX * 4) as u32) } as usize;
    // SAFETY: every pointer in `msg` points to a live buffer of the
    // length given beside it.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n > 0 {
        // SAFETY: the kernel filled msg_control; the CMSG macros stay
        // within it; data is read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let len = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
                    for i in 0..len / 4 {
                        fds.push(std::ptr::read_unaligned(data.add(i)));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    n
}

/// `sendmsg` of `bytes` with `fds` attached (none: a plain send).
fn send_fds(fd: RawFd, bytes: &[u8], fds: &[RawFd]) -> isize {
    let mut control = Control([0; 64]);
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr().cast_mut().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE/CMSG_LEN are arithmetic; the header and the
        // descriptors fit in the 64-byte buffer for up to MAX of them.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            let data = libc::CMSG_DATA(c).cast::<libc::c_int>();
            for (i, f) in fds.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *f);
            }
        }
    }
    // SAFETY: as for recv_fds; sendmsg only reads.
    unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) }
}

fn close_all(fds: &mut Vec<RawFd>) {
    for f in fds.drain(..) {
        // SAFETY: descriptors we received and own.
        unsafe { libc::close(f) };
    }
}

fn close(fd: RawFd, parked: &mut Parked) {
    close_all(&mut parked.fds);
    *parked = Parked::default();
    // SAFETY: a descriptor we accepted and own.
    unsafe { libc::close(fd) };
}

fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32) -> io::Result<()> {
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

fn would_block() -> bool {
    io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}
