//! The client's input side: stdin (or any reader) to the socket, in the
//! configured framing (see the table in the [`client`](super) docs).

use std::io::{BufRead, BufReader, ErrorKind, Read};

use socket2::Socket;

use uds_reactor::codec;
use uds_reactor::{Error, Framing, SocketType};

use super::{invalid, ClientConfig, CHUNK};
use crate::socket;

/// Copies `input` to the socket in the configured framing; returns the
/// number of messages (or lines) sent.
///
/// # Errors
///
/// [`Error::Io`]: reading the input, an input line over `max_frame`
/// (after sending the lines before it), sending.
pub fn pump<R: Read>(config: &ClientConfig, sock: &Socket, input: R) -> Result<u64, Error> {
    if config.socket_type == SocketType::Stream && config.framing == Framing::Raw {
        copy_raw(config, sock, input)
    } else {
        pump_lines(config, sock, input)
    }
}

/// A raw stream: bytes as they come, no lines counted.
fn copy_raw<R: Read>(config: &ClientConfig, sock: &Socket, mut input: R) -> Result<u64, Error> {
    let mut buf = vec![0; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(0),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", "stdin", e)),
        };
        socket::send_all(sock, &buf[..n]).map_err(|e| Error::io("send", &config.address, e))?;
    }
}

/// Every other type and framing: one frame or message per input line.
fn pump_lines<R: Read>(config: &ClientConfig, sock: &Socket, input: R) -> Result<u64, Error> {
    let send_all = |bytes: &[u8]| {
        socket::send_all(sock, bytes).map_err(|e| Error::io("send", &config.address, e))
    };
    let mut input = BufReader::with_capacity(CHUNK, input);
    let mut line = Vec::new();
    // Encoded frames not yet sent: written when the input has nothing
    // more buffered, so a pipe is sent in big writes and a terminal at once.
    let mut batch = Vec::new();
    let mut sent = 0;
    loop {
        if input.buffer().is_empty() && !batch.is_empty() {
            send_all(&batch)?;
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
            send_all(&batch)?;
            let msg = format!(
                "a line of {} bytes exceeds --max-frame {}",
                payload.len(),
                config.max_frame
            );
            return Err(Error::io("read", "stdin", invalid(msg)));
        }
        if send_line(config, sock, payload, &mut batch)? {
            sent += 1;
        }
    }
    if !batch.is_empty() {
        send_all(&batch)?;
    }
    Ok(sent)
}

/// Sends one line's payload as a message, or adds it to the stream batch
/// (sending the batch once it is big). Returns whether it counts as sent.
fn send_line(
    config: &ClientConfig,
    sock: &Socket,
    payload: &[u8],
    batch: &mut Vec<u8>,
) -> Result<bool, Error> {
    let err = |e| Error::io("send", &config.address, e);
    match config.socket_type {
        SocketType::Stream => {
            codec::encode(config.framing, payload, batch)
                .map_err(|e| err(invalid(e.to_string())))?;
            if batch.len() >= CHUNK {
                socket::send_all(sock, batch).map_err(err)?;
                batch.clear();
            }
        }
        // Zero bytes would read as end of stream on the server.
        SocketType::Seqpacket if payload.is_empty() => return Ok(false),
        SocketType::Seqpacket | SocketType::Dgram => {
            socket::send(sock, payload).map_err(err)?;
        }
    }
    Ok(true)
}
