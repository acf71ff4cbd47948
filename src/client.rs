//! A client like `nc -U` that knows the server's socket types and
//! framings: input lines (or bytes) go to the socket, replies come out one
//! per line (or as bytes).
//!
//! # What goes over the wire
//!
//! | type / framing     | each input ...                   | each reply ... |
//! |--------------------|----------------------------------|----------------|
//! | stream / raw       | byte, as is                      | byte, as is    |
//! | stream / line      | line, sent with its `\n`         | printed with `\n` |
//! | stream / length    | line without `\n`, behind a 4-byte big-endian length | payload printed with `\n` |
//! | seqpacket, dgram   | line without `\n`, as one message | printed with `\n` |
//!
//! A final input line without `\n` counts as a line. An empty line on a
//! seqpacket socket is not sent: Linux reads a zero-length message as end
//! of stream, so the server would hang up.
//!
//! # When it ends
//!
//! Connected types shut down their write side at end of input and finish
//! when the server closes (after echoing everything, for an echo server).
//! A datagram client binds its own temporary address (a file in the temp
//! directory, or an abstract name when the server's address is abstract),
//! finishes once every datagram sent has had its reply, or fails when
//! replies stop coming for [`ClientConfig::reply_wait`], and removes its
//! address when dropped.
//!
//! Two threads: one copies the input to the socket, the caller's copies
//! the socket to the output, so replies show as they arrive.
//!
//! # Examples
//!
//! ```
//! use uds_reactor::client::{Client, ClientConfig};
//! use uds_reactor::{Config, Framing, Server};
//!
//! let path = std::env::temp_dir().join(format!("client-doc-{}.sock", std::process::id()));
//! let mut config = Config::new(&path);
//! config.framing = Framing::Length;
//! let server = Server::bind(config)?;
//! let handle = server.handle();
//! let thread = std::thread::spawn(move || server.run());
//!
//! let mut client = ClientConfig::new(&path);
//! client.framing = Framing::Length;
//! let mut out = Vec::new();
//! Client::connect(&client)?.run(&b"one\ntwo\n"[..], &mut out)?;
//! assert_eq!(out, b"one\ntwo\n");
//!
//! handle.stop();
//! thread.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::codec::{self, Decoder, Eof};
use crate::config::{Address, Framing, SocketType};
use crate::error::Error;
use crate::sys;

/// Bytes moved per read on a raw stream.
const CHUNK: usize = 64 << 10;
/// How often a datagram client looks up from its socket to see whether
/// the input has ended.
const DGRAM_TICK: Duration = Duration::from_millis(20);

/// What to connect to and how to frame; [`ClientConfig::new`] gives the
/// server's defaults.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's address (`@name` = abstract).
    pub address: Address,
    /// Socket type; must match the server's.
    pub socket_type: SocketType,
    /// Stream framing; must be `Raw` for seqpacket and dgram.
    pub framing: Framing,
    /// Largest payload sent or accepted: a longer input line, or reply, is
    /// an error.
    pub max_frame: usize,
    /// Datagrams only: how long to wait for outstanding replies once the
    /// input has ended and replies stop coming.
    pub reply_wait: Duration,
}

impl ClientConfig {
    /// A stream/raw client of `address`, with a 1 MiB frame limit and a
    /// 2 s reply wait.
    pub fn new(address: impl AsRef<OsStr>) -> ClientConfig {
        ClientConfig {
            address: Address::parse(address.as_ref()),
            socket_type: SocketType::Stream,
            framing: Framing::Raw,
            max_frame: 1 << 20,
            reply_wait: Duration::from_secs(2),
        }
    }

    /// Checks the combination of settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a framing other than `raw` on a message type,
    /// a zero or over-32-bit `max_frame`, or an empty abstract name.
    pub fn validate(&self) -> Result<(), Error> {
        if self.socket_type != SocketType::Stream && self.framing != Framing::Raw {
            return Err(Error::Config(format!(
                "--framing {} applies to stream sockets only; {} sockets keep message boundaries already",
                self.framing, self.socket_type
            )));
        }
        if self.max_frame == 0 || self.max_frame > u32::MAX as usize {
            return Err(Error::Config(
                "--max-frame must be between 1 and 4G - 1".into(),
            ));
        }
        if self.address == Address::Abstract(Vec::new()) {
            return Err(Error::Config("abstract address '@' needs a name".into()));
        }
        Ok(())
    }
}

/// A client connected to its server, ready to [`run`](Client::run).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    sock: Socket,
    /// Our own address, for datagrams: removed on drop.
    local: Option<TempAddr>,
}

impl Client {
    /// Connects (binding a temporary address first, for datagrams).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] as [`ClientConfig::validate`]; [`Error::Io`]
    /// naming the step: `connect /path: No such file or directory`, ...
    pub fn connect(config: &ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let (sock, local) = connect(&config.address, config.socket_type)?;
        Ok(Client {
            config: config.clone(),
            sock,
            local,
        })
    }

    /// The temporary file a datagram client is bound to (to remove it if
    /// the process is killed before the client is dropped).
    pub fn local_path(&self) -> Option<&Path> {
        self.local.as_ref().and_then(TempAddr::path)
    }

    /// Copies `input` to the server and the server's replies to `output`
    /// until the server closes (connected types) or every datagram is
    /// answered. A closed `output` (`EPIPE`) ends the run quietly.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] naming the step: reading the input, an input line
    /// over `max_frame`, sending, receiving, a reply that breaks the
    /// framing or `max_frame`, missing datagram replies.
    pub fn run<R, W>(self, input: R, output: W) -> Result<(), Error>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        let writer_sock = self
            .sock
            .try_clone()
            .map_err(|e| Error::io("dup", "socket", e))?;
        let config = self.config.clone();
        let (done_tx, done_rx) = mpsc::channel();
        thread::Builder::new()
            .name("client-input".into())
            .spawn(move || {
                let result = pump_input(&config, &writer_sock, input);
                // Posted before the shutdown below, so it is there when
                // the reader sees the server close in answer.
                let _ = done_tx.send(result);
                if config.socket_type.is_connected() {
                    // The server finishes (and so do we) once it sees EOF,
                    // after an input error too.
                    let _ = writer_sock.shutdown(Shutdown::Write);
                }
            })
            .map_err(|e| Error::io("spawn", "input thread", e))?;
        let mut out = Output::new(output);
        let result = match self.config.socket_type {
            SocketType::Dgram => self.replies_dgram(&mut out, &done_rx),
            SocketType::Seqpacket => self.replies_messages(&mut out),
            SocketType::Stream => self.replies_stream(&mut out),
        };
        match result {
            Err(e) if out.closed => drop(e),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        // The server is done with us; report an input-side failure that
        // may have caused it. A writer still blocked on input is left.
        match done_rx.try_recv() {
            Ok(Err(e)) if !out.closed => Err(e),
            _ => Ok(()),
        }
    }

    fn replies_stream<W: Write>(&self, out: &mut Output<W>) -> Result<(), Error> {
        let framing = self.config.framing;
        let mut decoder = Decoder::new(framing, self.config.max_frame);
        let mut spare = Vec::new();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match (&self.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.err("read", e)),
            };
            if n == 0 {
                break;
            }
            if framing == Framing::Raw {
                out.write(&buf[..n]);
            } else {
                decoder
                    .decode(&buf[..n], &mut spare, |f| out.line(f.payload()))
                    .map_err(|e| self.err("read", invalid(e.to_string())))?;
            }
            out.flush()?;
        }
        if let Eof::Dropped(n) = decoder.decode_eof(&mut spare, |f| out.line(f.payload())) {
            return Err(self.err(
                "read",
                invalid(format!(
                    "the server closed inside a frame ({n} bytes dropped)"
                )),
            ));
        }
        out.flush()
    }

    fn replies_messages<W: Write>(&self, out: &mut Output<W>) -> Result<(), Error> {
        let mut buf = vec![0; self.config.max_frame + 1];
        loop {
            match sys::recv_msg(&self.sock, &mut buf) {
                Ok((0, _)) => return out.flush(),
                Ok((n, truncated)) => {
                    self.check_reply(n, truncated > n)?;
                    out.line(&buf[..n]);
                    out.flush()?;
                }
                Err(e) => return Err(self.err("read", e)),
            }
        }
    }

    fn replies_dgram<W: Write>(
        &self,
        out: &mut Output<W>,
        done: &mpsc::Receiver<Result<u64, Error>>,
    ) -> Result<(), Error> {
        self.sock
            .set_read_timeout(Some(DGRAM_TICK))
            .map_err(|e| self.err("setsockopt SO_RCVTIMEO", e))?;
        let mut buf = vec![0; self.config.max_frame + 1];
        let mut replies = 0u64;
        let mut sent = None;
        let mut last = Instant::now();
        loop {
            match sys::recv_msg(&self.sock, &mut buf) {
                Ok((n, truncated)) => {
                    self.check_reply(n, truncated > n)?;
                    out.line(&buf[..n]);
                    out.flush()?;
                    replies += 1;
                    last = Instant::now();
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(self.err("read", e)),
            }
            if sent.is_none() {
                match done.try_recv() {
                    Ok(result) => {
                        sent = Some(result?);
                        last = last.max(Instant::now());
                    }
                    Err(mpsc::TryRecvError::Empty) => continue,
                    Err(mpsc::TryRecvError::Disconnected) => sent = Some(replies),
                }
            }
            let Some(sent) = sent else { continue };
            if replies >= sent {
                return Ok(());
            }
            if last.elapsed() >= self.config.reply_wait {
                return Err(self.err(
                    "read",
                    io::Error::new(
                        ErrorKind::TimedOut,
                        format!(
                            "{} of {sent} replies missing after {:?}",
                            sent - replies,
                            self.config.reply_wait
                        ),
                    ),
                ));
            }
        }
    }

    fn check_reply(&self, n: usize, truncated: bool) -> Result<(), Error> {
        if truncated || n > self.config.max_frame {
            return Err(self.err(
                "read",
                invalid(format!(
                    "a reply is longer than --max-frame {}",
                    self.config.max_frame
                )),
            ));
        }
        Ok(())
    }

    fn err(&self, step: &'static str, e: io::Error) -> Error {
        Error::io(step, &self.config.address, e)
    }
}

/// Copies the input to the socket in the configured framing; returns the
/// number of messages (or lines) sent.
fn pump_input<R: Read>(config: &ClientConfig, sock: &Socket, input: R) -> Result<u64, Error> {
    let err = |step, e| Error::io(step, &config.address, e);
    if config.socket_type == SocketType::Stream && config.framing == Framing::Raw {
        let mut input = input;
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => return Ok(0),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read", "stdin", e)),
            };
            send_all(sock, &buf[..n]).map_err(|e| err("send", e))?;
        }
    }
    let mut input = BufReader::with_capacity(CHUNK, input);
    let mut line = Vec::new();
    // Encoded frames not yet sent: written when the input has nothing
    // more buffered, so a pipe is sent in big writes and a terminal at once.
    let mut batch = Vec::new();
    let mut sent = 0;
    loop {
        if input.buffer().is_empty() && !batch.is_empty() {
            send_all(sock, &batch).map_err(|e| err("send", e))?;
            batch.clear();
        }
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", "stdin", e)),
        }
        let payload = line.strip_suffix(b"\n").unwrap_or(&line);
        if payload.len() > config.max_frame {
            // What came before it still goes out (and is answered).
            send_all(sock, &batch).map_err(|e| err("send", e))?;
            return Err(Error::io(
                "read",
                "stdin",
                invalid(format!(
                    "a line of {} bytes exceeds --max-frame {}",
                    payload.len(),
                    config.max_frame
                )),
            ));
        }
        match config.socket_type {
            SocketType::Stream => {
                codec::encode(config.framing, payload, &mut batch)
                    .map_err(|e| err("send", invalid(e.to_string())))?;
                if batch.len() >= CHUNK {
                    send_all(sock, &batch).map_err(|e| err("send", e))?;
                    batch.clear();
                }
            }
            // Zero bytes would read as end of stream on the server.
            SocketType::Seqpacket if payload.is_empty() => continue,
            SocketType::Seqpacket | SocketType::Dgram => {
                sys::send_nosignal(sock, payload).map_err(|e| err("send", e))?;
            }
        }
        sent += 1;
    }
    if !batch.is_empty() {
        send_all(sock, &batch).map_err(|e| err("send", e))?;
    }
    Ok(sent)
}

/// Sends all of `buf` on a blocking stream socket.
fn send_all(sock: &Socket, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = sys::send_nosignal(sock, buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}

/// The client's output: buffered, and closed for good after `EPIPE`
/// (whoever reads it is gone; not an error).
struct Output<W: Write> {
    inner: io::BufWriter<W>,
    /// The first write error, reported at the next flush.
    error: Option<io::Error>,
    closed: bool,
}

impl<W: Write> Output<W> {
    fn new(w: W) -> Output<W> {
        Output {
            inner: io::BufWriter::with_capacity(CHUNK, w),
            error: None,
            closed: false,
        }
    }

    /// Writes `bytes`; returns whether to go on (a frame sink's answer).
    fn write(&mut self, bytes: &[u8]) -> bool {
        if self.error.is_none() {
            if let Err(e) = self.inner.write_all(bytes) {
                self.error = Some(e);
            }
        }
        self.error.is_none()
    }

    /// Writes `payload` and a newline.
    fn line(&mut self, payload: &[u8]) -> bool {
        self.write(payload) && self.write(b"\n")
    }

    fn flush(&mut self) -> Result<(), Error> {
        let result = match self.error.take() {
            Some(e) => Err(e),
            None => self.inner.flush(),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.closed = e.kind() == ErrorKind::BrokenPipe;
                Err(Error::io("write", "stdout", e))
            }
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
    sys::unix_addr(server).map_err(|e| match e {
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
    let addr = sys::unix_addr(&local.address)?;
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
