//! systemd socket activation (`LISTEN_FDS`) and readiness notification
//! (`NOTIFY_SOCKET`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

use super::upgrade::{METRICS_FILE_VAR, READY_FD_VAR, SOCKET_FILE_VAR};
use super::{retry, socket_type, FileId};
use crate::config::{Address, SocketType};
use crate::error::Error;

/// Set once the inherited descriptors have been taken: a process owns
/// them once only.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// What socket activation (by systemd, or by the old process of an
/// upgrade) passed this process.
#[derive(Debug)]
pub struct Inherited {
    /// The socket to serve: the first descriptor not named `metrics`.
    pub main: Socket,
    /// The descriptor named `metrics` in `LISTEN_FDNAMES`, a Unix stream
    /// listener, if one was passed.
    pub metrics: Option<Socket>,
    /// Set when an upgrade started this process: how to tell the old one
    /// we are listening, and which socket files are ours now.
    pub takeover: Option<Takeover>,
}

/// What the old process of an upgrade handed over beside the sockets.
#[derive(Debug)]
pub struct Takeover {
    /// The channel to the old process: one byte once listening.
    pub ready: Socket,
    /// Device and inode of the main socket's file, if the old process
    /// owned it (`UDS_REACTOR_SOCKET_FILE`).
    pub file: Option<FileId>,
    /// The same for the metrics socket (`UDS_REACTOR_METRICS_FILE`).
    pub metrics_file: Option<FileId>,
}

/// Takes over the sockets passed by socket activation.
///
/// Only when `LISTEN_PID` is this process and `LISTEN_FDS` is at least 1:
/// descriptors 3.. are then named by `LISTEN_FDNAMES` (systemd's
/// `FileDescriptorName=`; an upgrade passes `main:metrics`). The one named
/// `metrics` is the metrics socket; the first other one, descriptor 3
/// when there are no names, is served, checked to be a Unix socket of
/// type `ty` (and, for stream/seqpacket, listening). Both are made
/// nonblocking and close-on-exec, and so are descriptors passed beside
/// them that are not served (with a warning). With `UDS_REACTOR_READY_FD`
/// (an upgrade) the readiness channel is taken too. Otherwise `Ok(None)`.
/// The environment is only read, never edited (`remove_var` races with
/// every other thread reading it): a flag makes sure the descriptors are
/// taken once per process, so later calls give `Ok(None)`. `LISTEN_PID`
/// keeps a child from mistaking the variables for its own.
///
/// # Errors
///
/// [`Error::Activation`] when `LISTEN_FDS` is not a number, a descriptor
/// is closed or not a Unix socket of the type expected, or not listening;
/// [`Error::Io`] (step `fcntl`) if its flags cannot be set.
pub fn inherited_sockets(ty: SocketType) -> Result<Option<Inherited>, Error> {
    if !activated() {
        return Ok(None);
    }
    let Ok(fds) = std::env::var("LISTEN_FDS") else {
        return Ok(None);
    };
    let fds: RawFd = fds
        .trim()
        .parse()
        .ok()
        .filter(|n| (0..=1024).contains(n))
        .ok_or_else(|| Error::Activation(format!("LISTEN_FDS='{fds}' is not a number")))?;
    if fds == 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    let names: Vec<&str> = names.split(':').collect();
    let (mut main, mut metrics) = (None, None);
    for i in 0..fds {
        let fd = 3 + i;
        match names.get(i as usize) {
            Some(&"metrics") if metrics.is_none() => metrics = Some(fd),
            _ if main.is_none() => main = Some(fd),
            _ => {
                log::warn!(
                    "socket activation passed {fds} descriptors; descriptor {fd} is not served"
                );
                set_cloexec(fd)?;
            }
        }
    }
    let Some(main) = main else {
        return Err(Error::Activation(
            "LISTEN_FDNAMES names only a metrics socket, none to serve".into(),
        ));
    };
    let main = take(main, ty)?;
    let metrics = metrics.map(|fd| take(fd, SocketType::Stream)).transpose()?;
    Ok(Some(Inherited {
        main,
        metrics,
        takeover: takeover()?,
    }))
}

/// Descriptor `fd`, passed to us, as a socket of type `ty` (and listening
/// for stream/seqpacket), nonblocking and close-on-exec.
fn take(fd: RawFd, ty: SocketType) -> Result<Socket, Error> {
    let socket = take_fd(fd)?;
    let found = describe(&socket);
    if found != Some((Domain::UNIX, socket_type(ty))) {
        return Err(Error::Activation(format!(
            "descriptor {fd} is {}; --type {ty} expects a Unix {ty} socket",
            found.map_or_else(|| "not a socket".into(), |(d, t)| shown(d, t))
        )));
    }
    if ty.is_connected() && !socket.is_listener().unwrap_or(true) {
        return Err(Error::Activation(format!(
            "descriptor {fd} is a connection, not a listener (Accept=yes is not supported)"
        )));
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::io("fcntl", format!("descriptor {fd}"), e))?;
    Ok(socket)
}

/// Owns descriptor `fd`, passed to this process, close-on-exec from now.
fn take_fd(fd: RawFd) -> Result<Socket, Error> {
    // SAFETY: F_GETFD only reads the descriptor flags; on a closed
    // descriptor it fails with EBADF and touches nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(Error::Activation(format!("descriptor {fd} is not open")));
    }
    // SAFETY: the activation protocol (LISTEN_PID is us) hands this
    // descriptor to this process; it is open (checked above) and owned by
    // nothing else here: TAKEN makes sure no second call takes it.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    socket
        .set_cloexec(true)
        .map_err(|e| Error::io("fcntl", format!("descriptor {fd}"), e))?;
    Ok(socket)
}

/// Makes a passed descriptor we do not serve close-on-exec, so that it
/// goes no further (an upgrade hands over only what we serve).
fn set_cloexec(fd: RawFd) -> Result<(), Error> {
    // SAFETY: F_SETFD on a raw descriptor number only sets its flags, or
    // fails with EBADF if it is closed; no memory is involved.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBADF) {
            return Err(Error::io("fcntl", format!("descriptor {fd}"), e));
        }
    }
    Ok(())
}

/// The readiness channel and file ids an upgrade passed, if it did.
fn takeover() -> Result<Option<Takeover>, Error> {
    let Ok(fd) = std::env::var(READY_FD_VAR) else {
        return Ok(None);
    };
    let bad = || Error::Activation(format!("{READY_FD_VAR}='{fd}' is not a descriptor past 3"));
    let n: RawFd = fd.trim().parse().map_err(|_| bad())?;
    if n < 3 {
        return Err(bad());
    }
    let ready = take_fd(n)?;
    if describe(&ready).map(|(d, _)| d) != Some(Domain::UNIX) {
        return Err(Error::Activation(format!(
            "{READY_FD_VAR}: descriptor {n} is not a Unix socket"
        )));
    }
    Ok(Some(Takeover {
        ready,
        file: file_id(SOCKET_FILE_VAR),
        metrics_file: file_id(METRICS_FILE_VAR),
    }))
}

/// A `dev:ino` variable, if set and well-formed.
fn file_id(var: &str) -> Option<FileId> {
    let value = std::env::var(var).ok()?;
    let (dev, ino) = value.trim().split_once(':')?;
    Some(FileId {
        dev: dev.parse().ok()?,
        ino: ino.parse().ok()?,
    })
}

/// Whether systemd passed this process sockets: `LISTEN_PID` is our pid
/// (otherwise the variables are someone else's, e.g. a parent's) and
/// `LISTEN_FDS` is set.
pub fn activated() -> bool {
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    pid == Some(std::process::id()) && std::env::var_os("LISTEN_FDS").is_some()
}

/// A socket's domain and type, if it is a socket.
fn describe(socket: &Socket) -> Option<(Domain, Type)> {
    Some((socket.domain().ok()?, socket.r#type().ok()?))
}

/// `a Unix seqpacket socket`, `an IPv4 stream socket`, ...
fn shown(domain: Domain, ty: Type) -> String {
    let domain = match domain {
        Domain::UNIX => "a Unix",
        Domain::IPV4 => "an IPv4",
        Domain::IPV6 => "an IPv6",
        _ => "a non-Unix",
    };
    let ty = match ty {
        Type::STREAM => "stream",
        Type::SEQPACKET => "seqpacket",
        Type::DGRAM => "dgram",
        _ => "other",
    };
    format!("{domain} {ty} socket")
}

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to systemd's
/// `NOTIFY_SOCKET` as one datagram. `Ok(false)` if the variable is unset
/// or empty.
///
/// # Errors
///
/// As [`notify_to`].
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) if !target.is_empty() => notify_to(&target, state).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends `state` to the notification socket `target` (a path, or `@name`
/// for the abstract namespace) as one datagram.
///
/// # Errors
///
/// The address does not fit in `sun_path`, or the socket or `sendto` fails.
pub fn notify_to(target: &OsStr, state: &str) -> io::Result<()> {
    let addr = Address::parse(target).raw_sock_addr()?;
    let socket = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None)?;
    retry(|| socket.send_to_with_flags(state.as_bytes(), &addr, libc::MSG_NOSIGNAL))?;
    Ok(())
}
