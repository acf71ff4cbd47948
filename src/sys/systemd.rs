//! systemd socket activation (`LISTEN_FDS`) and readiness notification
//! (`NOTIFY_SOCKET`).

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Socket, Type};

use super::{retry, socket_type};
use crate::config::{Address, SocketType};
use crate::error::Error;

/// Set once descriptor 3 has been taken: a process owns it once only.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Takes over a listener passed by systemd socket activation.
///
/// Only when `LISTEN_PID` is this process and `LISTEN_FDS` is at least 1:
/// then descriptor 3 is checked to be a Unix socket of type `ty` (and, for
/// stream/seqpacket, listening) and made nonblocking and close-on-exec.
/// Otherwise `Ok(None)`. The environment is only read, never edited
/// (`remove_var` races with every other thread reading it): a flag makes
/// sure the descriptor is taken once per process, so later calls give
/// `Ok(None)`. `LISTEN_PID` keeps a child from mistaking the variables
/// for its own.
///
/// # Errors
///
/// [`Error::Activation`] when `LISTEN_FDS` is not a number or descriptor 3
/// is closed, not a Unix socket of type `ty`, or not listening;
/// [`Error::Io`] (step `fcntl`) if its flags cannot be set.
pub fn inherited_listener(ty: SocketType) -> Result<Option<Socket>, Error> {
    const FD: RawFd = 3;
    if !activated() {
        return Ok(None);
    }
    let Ok(fds) = std::env::var("LISTEN_FDS") else {
        return Ok(None);
    };
    let fds: u32 = fds
        .trim()
        .parse()
        .map_err(|_| Error::Activation(format!("LISTEN_FDS='{fds}' is not a number")))?;
    if fds == 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    if fds > 1 {
        log::warn!("socket activation passed {fds} descriptors; serving descriptor 3 only");
    }
    // SAFETY: F_GETFD only reads the descriptor flags; on a closed
    // descriptor it fails with EBADF and touches nothing.
    if unsafe { libc::fcntl(FD, libc::F_GETFD) } < 0 {
        return Err(Error::Activation("descriptor 3 is not open".into()));
    }
    // SAFETY: systemd's protocol (LISTEN_PID is us) hands descriptor 3 to
    // this process; it is open (checked above) and owned by nothing else
    // here: TAKEN makes sure no second call takes it.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(FD) });
    let found = describe(&socket);
    if found != Some((Domain::UNIX, socket_type(ty))) {
        return Err(Error::Activation(format!(
            "descriptor 3 is {}; --type {ty} expects a Unix {ty} socket",
            found.map_or_else(|| "not a socket".into(), |(d, t)| shown(d, t))
        )));
    }
    if ty.is_connected() && !socket.is_listener().unwrap_or(true) {
        return Err(Error::Activation(
            "descriptor 3 is a connection, not a listener (Accept=yes is not supported)".into(),
        ));
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::io("fcntl", "descriptor 3", e))?;
    socket
        .set_cloexec(true)
        .map_err(|e| Error::io("fcntl", "descriptor 3", e))?;
    Ok(Some(socket))
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
