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
//! # Descriptors
//!
//! The files of [`ClientConfig::send_fds`] are opened (read-only) before
//! connecting and go with the first message: the first write on a stream,
//! the first message sent on seqpacket and dgram. Every reply is received
//! with room for [`MAX_FDS`] descriptors; each one that comes is reported
//! on stderr as `fd N -> TARGET` (what `/proc/self/fd/N` links to) and
//! closed.

mod args;
mod input;
mod output;

use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::Socket;

use uds_reactor::codec::{Decoder, Eof};
use uds_reactor::fds::{recv_with_fds, MAX_FDS};
use uds_reactor::{Address, Error, Framing, SocketType};

pub use args::{run, ClientArgs};
use output::{report_fds, Output};

use crate::socket::{self, TempAddr};

/// Bytes moved per read on a raw stream.
const CHUNK: usize = 64 << 10;
/// How often a datagram client looks up from its socket to see whether
/// the input has ended.
const DGRAM_TICK: Duration = Duration::from_millis(20);

/// What to connect to and how to frame (from `uds-reactor client`'s
/// options).
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
    /// Files to open read-only and send with the first message.
    pub send_fds: Vec<PathBuf>,
}

impl ClientConfig {
    /// Checks the combination of settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a framing other than `raw` on a message type,
    /// a zero or over-32-bit `max_frame`, an empty abstract name, or more
    /// than [`MAX_FDS`] files to send.
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
        if self.send_fds.len() > MAX_FDS {
            return Err(Error::Config(format!(
                "{} --send-fd files: at most {MAX_FDS} descriptors go in one message",
                self.send_fds.len()
            )));
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
    /// The opened [`ClientConfig::send_fds`], for the first message.
    fds: Vec<File>,
}

impl Client {
    /// Opens the files to send, then connects (binding a temporary
    /// address first, for datagrams).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] as [`ClientConfig::validate`]; [`Error::Io`]
    /// naming the step: `open /some/file: No such file or directory`,
    /// `connect /path: Connection refused`, ...
    pub fn connect(config: &ClientConfig) -> Result<Client, Error> {
        config.validate()?;
        let fds = config
            .send_fds
            .iter()
            .map(|path| File::open(path).map_err(|e| Error::io("open", path.display(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        let (sock, local) = socket::connect(&config.address, config.socket_type)?;
        Ok(Client {
            config: config.clone(),
            sock,
            local,
            fds,
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
    pub fn run<R, W>(mut self, input: R, output: W) -> Result<(), Error>
    where
        R: Read + Send + 'static,
        W: Write,
    {
        let writer_sock = self
            .sock
            .try_clone()
            .map_err(|e| Error::io("dup", "socket", e))?;
        let config = self.config.clone();
        let fds = std::mem::take(&mut self.fds);
        let (done_tx, done_rx) = mpsc::channel();
        thread::Builder::new()
            .name("client-input".into())
            .spawn(move || {
                let result = input::pump(&config, &writer_sock, fds, input);
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
        let mut fds = Vec::new();
        loop {
            let n = match recv_with_fds(&self.sock, &mut buf, MAX_FDS, &mut fds) {
                Ok(got) => {
                    report_fds(&mut fds, got.fds_lost);
                    got.len
                }
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
            match self.recv_message(&mut buf) {
                Ok((0, _)) => return out.flush(),
                Ok((n, truncated)) => {
                    self.check_reply(n, truncated)?;
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
            match self.recv_message(&mut buf) {
                Ok((n, truncated)) => {
                    self.check_reply(n, truncated)?;
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

    /// One seqpacket or datagram reply, as [`socket::recv_message`]
    /// (`buf` one byte longer than the longest reply accepted), reporting
    /// and closing the descriptors that came with it.
    fn recv_message(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut fds = Vec::new();
        let got = recv_with_fds(&self.sock, buf, MAX_FDS, &mut fds)?;
        report_fds(&mut fds, got.fds_lost);
        let truncated = got.full_len > got.len || (!buf.is_empty() && got.len == buf.len());
        Ok((got.len, truncated))
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

fn invalid(msg: String) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, msg)
}
