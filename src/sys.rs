#![allow(unsafe_code)]
//! Every system call the safe crates lack, and the socket-file protocol.
//!
//! This is the one module allowed `unsafe`; each block says why it is
//! sound. Linux only (`accept4`, `SO_PEERCRED`, `SCM_CREDENTIALS`, abstract
//! names). Sockets are `socket2::Socket`s, nonblocking and close-on-exec
//! from the syscall that creates them.
//!
//! # The socket file
//!
//! [`bind`] on a path runs, under an exclusive `flock` on the parent
//! directory (so servers starting at once in one directory serialise):
//!
//! ```text
//! lstat path ── absent ──────────────────────────────────┐
//!   ├─ not a socket (file, dir, symlink) ─> NotSocket     │
//!   └─ a socket: nonblocking connect to it                │
//!        ├─ ok / EAGAIN / EPROTOTYPE ─> InUse (kept)      │
//!        ├─ ECONNREFUSED ─> stale: unlink if same inode ──┤
//!        └─ other (EACCES, ...) ─> Io("connect")          v
//! fchmod socket ─> bind ─> record dev+ino ─> chmod mode ─> lchown group ─> listen ─> unlock
//! ```
//!
//! Linux creates the file with the socket inode's mode less the umask, so
//! the `fchmod` before `bind` keeps the file from ever being wider than
//! `--mode` (the `chmod` after it only widens a umask-narrowed file to the
//! exact mode). Mode and group are in place before `listen`, so no peer
//! connects to a socket wider than `--mode`. A failure after `bind`
//! removes the file again. The file's ownership is then a value, a
//! [`SocketFile`], whose `Drop` unlinks the file only if it still has the
//! recorded device and inode: every exit path, error or not, cleans up.
//!
//! Submodules: `socket_file` (the protocol above, groups, addresses),
//! `systemd` (socket activation, readiness notification) and `upgrade`
//! (starting the new process of a SIGUSR2 upgrade).

mod peer;
mod socket_file;
mod systemd;
#[cfg(test)]
mod tests;
mod upgrade;

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::SocketType;
use crate::handler::PeerCred;

pub use peer::{peer_groups, peer_pidfd};
#[cfg(test)]
pub use socket_file::resolve_group;
pub use socket_file::{bind, local_address, SocketFile};
#[cfg(test)]
use systemd::notify_to;
pub use systemd::{inherited_sockets, notify, Inherited};
pub use upgrade::{pidfd_open, spawn_upgrade, Handing, METRICS_FILE_VAR, SOCKET_FILE_VAR};

/// Device and inode of a socket file we created, to remove it only if it is
/// still ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    /// `st_dev` of the file.
    pub dev: u64,
    /// `st_ino` of the file.
    pub ino: u64,
}

/// A bound socket, ready to register with mio.
#[derive(Debug)]
pub struct Bound {
    /// Nonblocking, close-on-exec. Listening for stream/seqpacket, merely
    /// bound for dgram.
    pub socket: Socket,
    /// The file we created, removed when this guard drops if it is still
    /// ours; `None` for abstract addresses and inherited sockets.
    pub file: Option<SocketFile>,
}

/// One datagram received by [`recv_dgram`].
#[derive(Debug)]
pub struct Datagram {
    /// Bytes copied into the buffer.
    pub len: usize,
    /// The datagram's real length (more than `len` when truncated).
    pub full_len: usize,
    /// The datagram was longer than the buffer; the rest is lost.
    pub truncated: bool,
    /// The sender's address; `None` when it is unbound (cannot be answered).
    pub from: Option<SockAddr>,
    /// The sender's credentials, when asked for and `SO_PASSCRED` is on.
    pub cred: Option<PeerCred>,
    /// Descriptors were lost (`MSG_CTRUNC`); see [`RecvFds::fds_lost`].
    pub fds_lost: bool,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit now in force (the old one if raising it was refused).
///
/// # Errors
///
/// `getrlimit` failing.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit, only read by the call.
        match cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) }) {
            Ok(_) => return Ok(raised.rlim_cur),
            Err(e) => log::debug!(
                "cannot raise the open-file limit to {}: {e}",
                raised.rlim_cur
            ),
        }
    }
    Ok(limit.rlim_cur)
}

/// The soft `RLIMIT_NOFILE` now in force (read only: raising it is the
/// embedding program's choice, see [`raise_nofile_limit`]).
///
/// # Errors
///
/// `getrlimit` failing.
pub fn nofile_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the call's duration.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    Ok(limit.rlim_cur)
}

/// Whether `signal` is ignored (`SIG_IGN`) in this process, as `nohup`
/// leaves SIGHUP: such a signal is meant not to stop us.
pub fn signal_ignored(signal: i32) -> bool {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask).
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries; `old` is valid and writable.
    let queried = unsafe { libc::sigaction(signal, std::ptr::null(), &mut old) };
    queried == 0 && old.sa_sigaction == libc::SIG_IGN
}

/// The credentials of the peer of a connected Unix socket (`SO_PEERCRED`).
///
/// # Errors
///
/// `getsockopt` failing (not a socket, not connected, ...).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is writable for `len` bytes, `len` is writable, and the
    // descriptor is borrowed, so open, for the call.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    })?;
    if len as usize != mem::size_of::<libc::ucred>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "short SO_PEERCRED",
        ));
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// Accepts a connection with `accept4`: the new socket is nonblocking and
/// close-on-exec from the start. Retries on `EINTR`.
///
/// # Errors
///
/// `accept4`'s error: `WouldBlock` when no connection is pending,
/// `EMFILE`/`ENFILE` when out of descriptors, `ECONNABORTED`, ...
pub fn accept(listener: &Socket) -> io::Result<Socket> {
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    let fd = retry(|| {
        // SAFETY: null address and length ask for no peer address; the
        // listener descriptor is borrowed, so open, for the call.
        cvt(unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                ptr::null_mut(),
                ptr::null_mut(),
                flags,
            )
        })
    })?;
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    Ok(Socket::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Receives one message from a seqpacket socket: `(bytes copied, the
/// message's real length)`; the message was truncated when the second is
/// larger (`MSG_TRUNC` makes `recv` report the real length on Unix
/// seqpacket sockets, Linux 3.4+). `(0, 0)` is EOF. `EINTR` is the
/// caller's to retry.
///
/// # Errors
///
/// `recv`'s error (`WouldBlock` when nothing is queued).
#[inline]
pub fn recv_msg(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, usize)> {
    let full = recv_flags(fd, buf, libc::MSG_TRUNC)?;
    Ok((full.min(buf.len()), full))
}

/// What a receive with room for descriptors gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvFds {
    /// Bytes copied into the buffer (0 with no descriptor is EOF).
    pub len: usize,
    /// The message's real length (more than `len` when a message was
    /// truncated; on a stream, `len`).
    pub full_len: usize,
    /// Descriptors were lost: more came than the control buffer held
    /// (`MSG_CTRUNC`: over `max_fds`, or the receiver is out of
    /// descriptors). Those that did arrive are in `fds` all the same.
    pub fds_lost: bool,
}

/// The most descriptors one message can carry (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// Receives bytes (one message on seqpacket) with up to `max_fds`
/// descriptors, appended to `fds` close-on-exec. The kernel rounds the
/// control buffer up, so more than `max_fds` can arrive without
/// `fds_lost`: the caller checks the count. Retries on `EINTR`.
///
/// # Errors
///
/// `recvmsg`'s error (`WouldBlock` when nothing is queued).
pub fn recv_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<RecvFds> {
    let got = recvmsg(sock, buf, None, false, Some((fds, max_fds)))?;
    Ok(RecvFds {
        len: got.len,
        full_len: got.full_len,
        fds_lost: got.ctrunc,
    })
}

/// Sends `buf` (one message on seqpacket and dgram) with `fds` attached,
/// to `to` on an unconnected datagram socket; `MSG_NOSIGNAL`. On a
/// stream, the descriptors go with the first byte sent: any `Ok(n)` with
/// `n > 0` sent them all. Retries on `EINTR`.
///
/// # Errors
///
/// `sendmsg`'s error (`WouldBlock`, `EPIPE`, ...); `InvalidInput` for
/// more than [`MAX_FDS`] descriptors.
pub fn send_fds<F: AsFd>(
    sock: BorrowedFd<'_>,
    buf: &[u8],
    fds: &[F],
    to: Option<&SockAddr>,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors: at most {MAX_FDS} go in one message",
                fds.len()
            ),
        ));
    }
    let mut control = Control::new();
    let space = rights_space(fds.len());
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_ptr().cast_mut().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(to) = to {
            msg.msg_name = to.as_ptr().cast_mut().cast();
            msg.msg_namelen = to.len();
        }
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr();
            msg.msg_controllen = space as _;
            // SAFETY: the control buffer is aligned for cmsghdr and at
            // least `space` (at most CONTROL_SPACE) bytes long, room for
            // one SCM_RIGHTS header and `fds.len()` ints; those `space`
            // bytes are zeroed first (padding included), so the kernel
            // reads only initialised bytes; CMSG_FIRSTHDR is non-null for
            // a buffer that long. Data is written unaligned.
            unsafe {
                ptr::write_bytes(control.as_mut_ptr().cast::<u8>(), 0, space);
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN((fds.len() * FD_LEN) as u32) as _;
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for (i, fd) in fds.iter().enumerate() {
                    ptr::write_unaligned(data.add(i), fd.as_fd().as_raw_fd());
                }
            }
        }
        // SAFETY: every pointer in `msg` is null or points to a live buffer
        // of the length given beside it (iov only read by sendmsg); the
        // socket and the descriptors are borrowed, so open, for the call.
        match cvt_len(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            sent => return sent,
        }
    }
}

/// Receives one datagram with its sender's address and, if `want_cred`
/// (and the caller turned `SO_PASSCRED` on), its credentials. With `fds`,
/// up to its count of descriptors are appended to its vector (see
/// [`recv_fds`]); without, any a sender passed along are closed. Retries
/// on `EINTR`.
///
/// # Errors
///
/// `recvmsg`'s error (`WouldBlock` when nothing is queued).
pub fn recv_dgram(
    sock: &Socket,
    buf: &mut [u8],
    want_cred: bool,
    fds: Option<(&mut Vec<OwnedFd>, usize)>,
) -> io::Result<Datagram> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let got = recvmsg(sock.as_fd(), buf, Some(&mut storage), want_cred, fds)?;
    let name_len = got
        .name_len
        .min(mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
    let from = (name_len as usize > mem::size_of::<libc::sa_family_t>())
        // SAFETY: the kernel wrote `name_len` bytes of address into the
        // zeroed storage, and `name_len` is within it.
        .then(|| unsafe { SockAddr::new(storage, name_len) });
    Ok(Datagram {
        len: got.len,
        full_len: got.full_len,
        truncated: got.truncated,
        from,
        cred: got.cred,
        fds_lost: got.ctrunc,
    })
}

/// Adds (`add`) or modifies `fd` in the epoll instance `ep` (mio's),
/// **level-triggered**, reporting `token` as mio does (the event's data),
/// for reading (`EPOLLIN | EPOLLRDHUP`) and/or writing. mio registers
/// edge-triggered only; a stream that carries descriptors needs level:
/// the kernel ends a read at the bytes carrying them, so a short read
/// does not prove the socket drained, and under level-triggered polling
/// the next wait says so without a syscall of its own.
///
/// # Errors
///
/// `epoll_ctl`'s error.
pub fn epoll_level(
    ep: BorrowedFd<'_>,
    fd: BorrowedFd<'_>,
    token: usize,
    (read, write): (bool, bool),
    add: bool,
) -> io::Result<()> {
    let mut events = 0;
    if read {
        events |= libc::EPOLLIN | libc::EPOLLRDHUP;
    }
    if write {
        events |= libc::EPOLLOUT;
    }
    let mut ev = libc::epoll_event {
        events: events as u32,
        u64: token as u64,
    };
    let op = if add {
        libc::EPOLL_CTL_ADD
    } else {
        libc::EPOLL_CTL_MOD
    };
    // SAFETY: `ev` is a valid epoll_event for the call; both descriptors
    // are borrowed, so open, for it.
    cvt(unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) }).map(drop)
}

/// One `send(2)` with `MSG_NOSIGNAL` (a closed peer gives `EPIPE`, not
/// SIGPIPE), straight on libc: the loop's hot path, where socket2's
/// wrapper and a retry closure cost more instructions than the rest of
/// the echo's bookkeeping. `EINTR` is the caller's to retry.
///
/// # Errors
///
/// `send`'s error (`WouldBlock`, `Interrupted`, `EPIPE`, ...).
#[inline]
pub fn send_once(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the
    // call's duration; `fd` is borrowed, so open.
    cvt_len(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    })
}

/// One `recv(2)` into `buf`, straight on libc (see [`send_once`]).
/// `EINTR` is the caller's to retry.
///
/// # Errors
///
/// `recv`'s error (`WouldBlock`, `Interrupted`, `ECONNRESET`, ...).
#[inline]
pub fn recv_once(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    recv_flags(fd, buf, 0)
}

/// One `recv(2)` with `flags`; what it returns (with `MSG_TRUNC`, a
/// message's real length, which may exceed `buf`).
#[inline]
fn recv_flags(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
    // call's duration (the kernel writes at most that many, whatever it
    // returns); `fd` is borrowed, so open.
    cvt_len(unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) })
}

/// `send(2)` with `MSG_NOSIGNAL` (a closed peer gives `EPIPE`, not SIGPIPE).
/// Retries on `EINTR`.
///
/// # Errors
///
/// `send`'s error (`WouldBlock`, `EPIPE`, ...).
pub fn send_nosignal(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    retry(|| send_once(sock.as_fd(), buf))
}

/// Bytes of a Unix socket's send buffer a datagram or seqpacket message
/// cannot use: Linux refuses (`EMSGSIZE`) a message longer than
/// `SO_SNDBUF` minus this.
const MSG_OVERHEAD: usize = 32;

/// Lets a datagram or seqpacket socket send messages of `max_msg` bytes,
/// raising `SO_SNDBUF` if needed (never lowering it), and returns the
/// longest message it can send now. The default buffer
/// (`net.core.wmem_default`, usually 208 KiB) is smaller than the default
/// `--max-frame`; the kernel caps what we ask for at `net.core.wmem_max`.
///
/// # Errors
///
/// `getsockopt`/`setsockopt` failing.
pub fn fit_send_buffer(sock: &Socket, max_msg: usize) -> io::Result<usize> {
    let mut have = sock.send_buffer_size()?;
    if have < max_msg.saturating_add(MSG_OVERHEAD) {
        // The kernel doubles the value asked for (for its bookkeeping).
        sock.set_send_buffer_size(max_msg.saturating_add(MSG_OVERHEAD))?;
        have = sock.send_buffer_size()?;
    }
    Ok(have.saturating_sub(MSG_OVERHEAD))
}

/// What one `recvmsg` gave.
struct Received {
    /// Bytes copied into the buffer.
    len: usize,
    /// The message's real length (`MSG_TRUNC` asks the kernel for it).
    full_len: usize,
    truncated: bool,
    /// `MSG_CTRUNC`: control data (descriptors) did not fit.
    ctrunc: bool,
    name_len: libc::socklen_t,
    cred: Option<PeerCred>,
}

/// Bytes of one descriptor in `SCM_RIGHTS` data.
const FD_LEN: usize = mem::size_of::<libc::c_int>();

// SAFETY: CMSG_SPACE is pure arithmetic on its argument.
const CRED_SPACE: usize =
    unsafe { libc::CMSG_SPACE(mem::size_of::<libc::ucred>() as u32) } as usize;

/// Control bytes for `n` descriptors (none for 0).
const fn rights_space(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        // SAFETY: CMSG_SPACE is pure arithmetic on its argument.
        unsafe { libc::CMSG_SPACE((n * FD_LEN) as u32) as usize }
    }
}

/// The largest control buffer used: credentials and `MAX_FDS` rights.
const CONTROL_SPACE: usize = CRED_SPACE + rights_space(MAX_FDS);

/// A control buffer, aligned for `cmsghdr`. Left uninitialised: the
/// kernel writes what it hands back (and `msg_controllen` says how much),
/// and a sender zeroes only the bytes it uses; zeroing all of it (a
/// kilobyte, for `MAX_FDS`) cost more than the rest of a small echo.
#[repr(C, align(8))]
struct Control(mem::MaybeUninit<[u8; CONTROL_SPACE]>);

impl Control {
    fn new() -> Control {
        Control(mem::MaybeUninit::uninit())
    }

    /// The buffer's start, for `msg_control`.
    fn as_mut_ptr(&mut self) -> *mut libc::c_void {
        self.0.as_mut_ptr().cast()
    }
}

/// `recvmsg` into one buffer, optionally with the sender's address, its
/// credentials, and up to `fds.1` descriptors (appended to `fds.0`).
/// Retries on `EINTR`.
fn recvmsg(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    name: Option<&mut libc::sockaddr_storage>,
    want_cred: bool,
    mut fds: Option<(&mut Vec<OwnedFd>, usize)>,
) -> io::Result<Received> {
    let name: *mut libc::sockaddr_storage = name.map_or(ptr::null_mut(), |n| n);
    let rights = fds
        .as_ref()
        .map_or(0, |(_, max)| rights_space((*max).min(MAX_FDS)));
    let space = if want_cred { CRED_SPACE } else { 0 } + rights;
    let mut control = Control::new();
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !name.is_null() {
            msg.msg_name = name.cast();
            msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        if space > 0 {
            // Uninitialised: the kernel writes it; only what it wrote
            // (msg_controllen on return) is read.
            msg.msg_control = control.as_mut_ptr();
            msg.msg_controllen = space as _;
        }
        // SAFETY: every pointer in `msg` is null or points to a live,
        // writable buffer of the length given beside it (`space` is at
        // most CONTROL_SPACE); the socket is borrowed, so open, for the
        // call. MSG_TRUNC only changes the value returned (the real
        // length), never what is written.
        let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_TRUNC;
        let n = match cvt_len(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) }) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            got => got?,
        };
        let cred = if space > 0 {
            parse_control(&msg, fds.as_mut().map(|(v, _)| &mut **v))
        } else {
            None
        };
        return Ok(Received {
            len: n.min(buf.len()),
            full_len: n,
            truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            ctrunc: msg.msg_flags & libc::MSG_CTRUNC != 0,
            name_len: msg.msg_namelen,
            cred,
        });
    }
}

/// Finds `SCM_CREDENTIALS` in a received control buffer, and takes the
/// descriptors (`SCM_RIGHTS`) into `fds`, or closes them without it.
fn parse_control(msg: &libc::msghdr, mut fds: Option<&mut Vec<OwnedFd>>) -> Option<PeerCred> {
    let mut cred = None;
    // SAFETY: `msg` was just filled by recvmsg; msg_control/msg_controllen
    // describe the part of our aligned control buffer the kernel wrote, and
    // the CMSG_* macros never step outside it. Data is read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            let data_len = ((*cmsg).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                    if data_len >= mem::size_of::<libc::ucred>() =>
                {
                    let c = ptr::read_unaligned(data.cast::<libc::ucred>());
                    cred = Some(PeerCred {
                        pid: c.pid,
                        uid: c.uid,
                        gid: c.gid,
                    });
                }
                (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                    for i in 0..data_len / FD_LEN {
                        let fd = ptr::read_unaligned(data.cast::<libc::c_int>().add(i));
                        // The kernel installed it for us: we own it.
                        let fd = OwnedFd::from_raw_fd(fd);
                        if let Some(fds) = fds.as_deref_mut() {
                            fds.push(fd);
                        }
                    }
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    cred
}

/// Turns a `-1` byte count (`ssize_t`) into the `errno` error.
#[inline]
fn cvt_len(n: isize) -> io::Result<usize> {
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Turns a `-1` return into the `errno` error.
fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Repeats `f` while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// The `socket2` type of a [`SocketType`].
fn socket_type(ty: SocketType) -> Type {
    match ty {
        SocketType::Stream => Type::STREAM,
        SocketType::Seqpacket => Type::SEQPACKET,
        SocketType::Dgram => Type::DGRAM,
    }
}

/// A nonblocking, close-on-exec Unix socket, in one syscall.
fn new_socket(ty: SocketType) -> io::Result<Socket> {
    Socket::new(Domain::UNIX, socket_type(ty).nonblocking().cloexec(), None)
}
