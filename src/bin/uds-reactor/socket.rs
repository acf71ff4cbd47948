//! The Unix sockets of the client and the load generator: making them,
//! connecting them, binding a datagram socket a temporary address the
//! server can answer, and the sends and receives both use.

use std::io::{self, ErrorKind, IoSlice, Read};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use socket2::{Domain, SockAddr, Socket, Type};

use uds_reactor::{Address, Error, SocketType};

/// `send(2)` with `MSG_NOSIGNAL`, so a closed peer is an `EPIPE` error,
/// not a SIGPIPE that kills us. Retries on `EINTR`.
///
/// # Errors
///
/// `send`'s error (`WouldBlock`, `EPIPE`, ...).
pub fn send(sock: &Socket, buf: &[u8]) -> io::Result<usize> {
    retry(|| sock.send_with_flags(buf, libc::MSG_NOSIGNAL))
}

/// `sendmsg(2)` of several buffers with `MSG_NOSIGNAL`. Retries on `EINTR`.
///
/// # Errors
///
/// `sendmsg`'s error (`WouldBlock`, `EPIPE`, ...).
pub fn send_vectored(sock: &Socket, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    retry(|| sock.send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL))
}

/// Sends all of `buf` on a blocking stream socket.
///
/// # Errors
///
/// As [`send`].
pub fn send_all(sock: &Socket, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = send(sock, buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Receives one message of a seqpacket or datagram socket into `buf`:
/// `(bytes copied, whether the message was too long)`. `(0, false)` is an
/// empty message, or end of stream on a seqpacket socket. Retries on
/// `EINTR`.
///
/// "Too long" means it filled `buf`, so callers make `buf` one byte
/// longer than the longest message they accept: the kernel truncates a
/// longer one to `buf`'s length (and drops the rest), so a full buffer is
/// exactly "longer than allowed". This reads the message with a plain,
/// safe `recv` into initialised memory; socket2's flag-reporting receives
/// (`recv_vectored_with_flags` and its `RecvFlags::is_truncated`) take
/// `MaybeUninit` buffers, which would need `unsafe` here to read back.
///
/// # Errors
///
/// `recv`'s error (`WouldBlock` when nothing is queued, ...).
pub fn recv_message(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let n = retry(|| (&*sock).read(buf))?;
    Ok((n, !buf.is_empty() && n == buf.len()))
}

/// Repeats `f` while it fails with `EINTR`.
fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// A temporary address a datagram socket is bound to; a file is removed
/// on drop.
#[derive(Debug)]
pub struct TempAddr {
    /// The bound address.
    pub address: Address,
}

impl TempAddr {
    /// The file, for a path address.
    pub fn path(&self) -> Option<&Path> {
        match &self.address {
            Address::Path(p) => Some(p),
            Address::Abstract(_) => None,
        }
    }
}

impl Drop for TempAddr {
    fn drop(&mut self) {
        if let Some(path) = self.path() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A fresh address for a datagram socket talking to `server`: an abstract
/// name if the server's is abstract, else a file in the temp directory.
/// Unique per process and call.
pub fn temp_address(server: &Address, tag: &str) -> Address {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("uds-reactor-{tag}-{}-{n}", std::process::id());
    match server {
        Address::Abstract(_) => Address::Abstract(name.into_bytes()),
        Address::Path(_) => Address::Path(std::env::temp_dir().join(format!("{name}.sock"))),
    }
}

/// The `sockaddr_un` of a server address, for connecting.
///
/// # Errors
///
/// [`Error::Io`] (`connect PATH: path too long ...`) when it does not fit
/// in `sun_path`; [`Error::Config`] for an empty path or one with a NUL.
pub fn server_addr(server: &Address) -> Result<SockAddr, Error> {
    server.to_sock_addr().map_err(|e| match e {
        Error::PathTooLong(_) => Error::io(
            "connect",
            server,
            io::Error::new(
                ErrorKind::InvalidInput,
                "path too long for a Unix socket address (at most 107 bytes)",
            ),
        ),
        other => other,
    })
}

/// A new close-on-exec Unix socket of type `ty`, nonblocking if asked.
///
/// # Errors
///
/// `socket(2)`'s error (`EMFILE`, ...).
pub fn new_socket(ty: SocketType, nonblocking: bool) -> io::Result<Socket> {
    let mut kind = match ty {
        SocketType::Stream => Type::STREAM,
        SocketType::Seqpacket => Type::SEQPACKET,
        SocketType::Dgram => Type::DGRAM,
    }
    .cloexec();
    if nonblocking {
        kind = kind.nonblocking();
    }
    Socket::new(Domain::UNIX, kind, None)
}

/// Binds a datagram socket to a fresh [`temp_address`] so that `server`
/// can answer it.
///
/// # Errors
///
/// [`Error::Io`] `bind ADDRESS: ...`.
pub fn bind_temp(sock: &Socket, server: &Address, tag: &str) -> Result<TempAddr, Error> {
    let local = TempAddr {
        address: temp_address(server, tag),
    };
    let addr = local.address.to_sock_addr()?;
    sock.bind(&addr)
        .map_err(|e| Error::io("bind", &local.address, e))?;
    Ok(local)
}

/// A blocking socket of type `ty` connected to `server` (a datagram socket
/// bound to a [`temp_address`] first).
///
/// # Errors
///
/// [`Error::Io`] naming the step: `socket`, `bind` (our own address),
/// `connect` (the server's): `connect /run/x.sock: No such file or
/// directory (os error 2)`.
pub fn connect(server: &Address, ty: SocketType) -> Result<(Socket, Option<TempAddr>), Error> {
    let addr = server_addr(server)?;
    let sock = new_socket(ty, false).map_err(|e| Error::io("socket", server, e))?;
    let local = if ty == SocketType::Dgram {
        Some(bind_temp(&sock, server, "client")?)
    } else {
        None
    };
    sock.connect(&addr)
        .map_err(|e| Error::io("connect", server, e))?;
    Ok((sock, local))
}
