//! systemd socket activation (`LISTEN_FDS`) and readiness notification
//! (`NOTIFY_SOCKET`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use socket2::{Domain, Socket, Type};

use super::socket_file::sockaddr;
use super::{retry, socket_type};
use crate::config::{Address, SocketType};
use crate::error::Error;

/// Takes over a listener passed by systemd socket activation.
///
/// Only when `LISTEN_PID` is this process and `LISTEN_FDS` is at least 1:
/// then descriptor 3 is checked to be a Unix socket of type `ty` (and, for
/// stream/seqpacket, listening), made nonblocking and close-on-exec, and
/// `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES` are removed from the
/// environment. Otherwise `Ok(None)` and the variables are left alone.
/// Call it once, before starting threads (it edits the environment).
///
/// # Errors
///
/// [`Error::Activation`] when `LISTEN_FDS` is not a number or descriptor 3
/// is closed, not a Unix socket of type `ty`, or not listening;
/// [`Error::Io`] (step `fcntl`) if its flags cannot be set.
pub fn inherited_listener(ty: SocketType) -> Result<Option<Socket>, Error> {
    const FD: RawFd = 3;
    let pid = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    if pid != Some(std::process::id()) {
        return Ok(None);
    }
    let Ok(fds) = std::env::var("LISTEN_FDS") else {
        return Ok(None);
    };
    let fds: u32 = fds
        .trim()
        .parse()
        .map_err(|_| Error::Activation(format!("LISTEN_FDS='{fds}' is not a number")))?;
    if fds == 0 {
        return Ok(None);
    }
    // Removed before taking the descriptor, so it is taken once only.
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
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
    // here: the variables announcing it are gone, so no second call takes it.
    let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(FD) });
    let wrong = || Error::Activation(format!("descriptor 3 is not a Unix {ty} socket"));
    if socket.domain().map_err(|_| wrong())? != Domain::UNIX
        || socket.r#type().map_err(|_| wrong())? != socket_type(ty)
    {
        return Err(wrong());
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

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) to systemd's
/// `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) as one
/// datagram. `Ok(false)` if the variable is unset or empty.
///
/// # Errors
///
/// The address does not fit in `sun_path`, or the socket or `sendto` fails.
pub fn notify(state: &str) -> io::Result<bool> {
    let target = match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) if !target.is_empty() => target,
        _ => return Ok(false),
    };
    let addr = sockaddr(&Address::parse(&target))?;
    let socket = Socket::new(Domain::UNIX, Type::DGRAM.cloexec(), None)?;
    retry(|| socket.send_to_with_flags(state.as_bytes(), &addr, libc::MSG_NOSIGNAL))?;
    Ok(true)
}
