//! The client's input side: stdin (or any reader) to the socket, in the
//! configured framing (see the table in the [`client`](super) docs), the
//! descriptors to send with the first message.

use std::fs::File;
use std::io::{self, BufRead, BufReader, ErrorKind, Read};

use socket2::Socket;

use uds_reactor::codec;
use uds_reactor::fds::send_with_fds;
use uds_reactor::{Error, Framing, SocketType};

use super::{invalid, ClientConfig, CHUNK};
use crate::socket;

/// Copies `input` to the socket in the configured framing, `fds` with the
/// first message; returns the number of messages (or lines) sent.
///
/// # Errors
///
/// [`Error::Io`]: reading the input, an input line over `max_frame`
/// (after sending the lines before it), sending, an input with no message
/// to carry `fds`.
pub fn pump<R: Read>(
    config: &ClientConfig,
    sock: &Socket,
    fds: Vec<File>,
    input: R,
) -> Result<u64, Error> {
    let mut to = Sink { config, sock, fds };
    let sent = if config.socket_type == SocketType::Stream && config.framing == Framing::Raw {
        copy_raw(&mut to, input)
    } else {
        pump_lines(&mut to, input)
    }?;
    if !to.fds.is_empty() {
        let msg = "no input, so no message carried the --send-fd descriptors";
        return Err(Error::io("send", &config.address, invalid(msg.into())));
    }
    Ok(sent)
}

/// The socket, and the descriptors the first send still owes.
struct Sink<'a> {
    config: &'a ClientConfig,
    sock: &'a Socket,
    /// Sent (and closed here) with the first bytes or message.
    fds: Vec<File>,
}

impl Sink<'_> {
    /// All of `bytes` on a stream, the owed descriptors with the first.
    fn send_all(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        if !self.fds.is_empty() && !bytes.is_empty() {
            let n = self.send_fds(bytes)?;
            bytes = &bytes[n..];
        }
        socket::send_all(self.sock, bytes).map_err(|e| self.err(e))
    }

    /// One message, with the owed descriptors.
    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.fds.is_empty() {
            socket::send(self.sock, bytes).map_err(|e| self.err(e))?;
        } else {
            self.send_fds(bytes)?;
        }
        Ok(())
    }

    /// One `sendmsg` of `bytes` with every owed descriptor (any bytes sent
    /// took them all), which are then closed here.
    fn send_fds(&mut self, bytes: &[u8]) -> Result<usize, Error> {
        let n = send_with_fds(self.sock, bytes, &self.fds).map_err(|e| self.err(e))?;
        self.fds.clear();
        Ok(n)
    }

    fn err(&self, e: io::Error) -> Error {
        Error::io("send", &self.config.address, e)
    }
}

/// A raw stream: bytes as they come, no lines counted.
fn copy_raw<R: Read>(to: &mut Sink<'_>, mut input: R) -> Result<u64, Error> {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", "stdin", e)),
        };
        to.send_all(&buf[..n])?;
    }
}

/// Every other type and framing: one frame or message per input line.
fn pump_lines<R: Read>(to: &mut Sink<'_>, input: R) -> Result<u64, Error> {
    let config = to.config;
    let mut input = BufReader::with_capacity(CHUNK, input);
    let mut line = Vec::new();
    // Encoded frames not yet sent: written when the input has nothing
    // more buffered, so a pipe is sent in big writes and a terminal at once.
    let mut batch = Vec::new();
    let mut sent = 0;
    loop {
        if input.buffer().is_empty() && !batch.is_empty() {
            to.send_all(&batch)?;
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
            to.send_all(&batch)?;
            let msg = format!(
                "a line of {} bytes exceeds --max-frame {}",
                payload.len(),
                config.max_frame
            );
            return Err(Error::io("read", "stdin", invalid(msg)));
        }
        if send_line(to, payload, &mut batch)? {
            sent += 1;
        }
    }
    if !batch.is_empty() {
        to.send_all(&batch)?;
    }
    Ok(sent)
}

/// Sends one line's payload as a message, or adds it to the stream batch
/// (sending the batch once it is big). Returns whether it counts as sent.
fn send_line(to: &mut Sink<'_>, payload: &[u8], batch: &mut Vec<u8>) -> Result<bool, Error> {
    match to.config.socket_type {
        SocketType::Stream => {
            codec::encode(to.config.framing, payload, batch)
                .map_err(|e| to.err(invalid(e.to_string())))?;
            if batch.len() >= CHUNK {
                to.send_all(batch)?;
                batch.clear();
            }
        }
        // Zero bytes would read as end of stream on the server.
        SocketType::Seqpacket if payload.is_empty() => return Ok(false),
        SocketType::Seqpacket | SocketType::Dgram => to.send(payload)?,
    }
    Ok(true)
}
