//! A small key-value store over length frames: one map shared by every
//! connection, a request counter per connection, and a `QUIT` command that
//! closes the connection from the handler.
//!
//! # Protocol
//!
//! Every request and every reply is one `length` frame (a 4-byte
//! big-endian payload length, then the payload). Payloads are text-like
//! commands; keys are bytes without spaces, values are any bytes (the rest
//! of the payload after the key's space, possibly empty).
//!
//! ```text
//! request                 reply
//! SET <key> <value>       OK               (OK; or ERR store full)
//! GET <key>               VALUE <value>    or NOTFOUND
//! DEL <key>               OK               or NOTFOUND
//! COUNT                   OK <n>           requests on this connection, this one included
//! QUIT                    BYE              then the server closes the connection
//! anything else           ERR <why>
//! ```
//!
//! Command names are case-insensitive.
//!
//! # Running it
//!
//! ```text
//! cargo run --example kv -- /tmp/kv.sock
//! ```
//!
//! and from another terminal (each argument is one request):
//!
//! ```text
//! python3 -c '
//! import socket, struct, sys
//! s = socket.socket(socket.AF_UNIX); s.connect("/tmp/kv.sock"); f = s.makefile("rb")
//! for req in sys.argv[1:]:
//!     b = req.encode(); s.sendall(struct.pack(">I", len(b)) + b)
//!     n, = struct.unpack(">I", f.read(4)); print(f.read(n).decode())
//! ' "SET greeting hello world" "GET greeting" "COUNT" "DEL greeting" "GET greeting" QUIT
//! ```
//!
//! Ctrl-C (SIGINT) or SIGTERM stops the server and removes the socket file.
//!
//! `tests/handlers.rs` includes this file as a module and runs [`Kv`] with
//! [`config`].

use std::collections::HashMap;
use std::ffi::OsStr;
use std::process::ExitCode;

use log::{debug, LevelFilter};
use uds_reactor::{Closed, Config, Context, Ctl, Error, Frame, Framing, Handler, Server};

/// The most keys the store holds; a `SET` of a new key past it fails, so a
/// client cannot grow the server without bound.
pub const MAX_KEYS: usize = 100_000;

/// The store: one map for every connection (the server runs handlers on
/// its one thread, so no lock is needed).
#[derive(Debug, Default)]
pub struct Kv {
    map: HashMap<Vec<u8>, Vec<u8>>,
}

/// Per-connection state: created on accept, dropped on close.
#[derive(Debug, Default)]
pub struct Session {
    /// Requests handled on this connection.
    pub requests: u64,
}

impl Handler for Kv {
    type State = Session;

    fn open(&mut self, _: &mut Context<'_>) -> Session {
        Session::default()
    }

    fn frame(&mut self, session: &mut Session, frame: Frame<'_>, cx: &mut Context<'_>) {
        session.requests += 1;
        let (command, args) = split_word(frame.payload());
        let reply = self.execute(command, args, session);
        // A line reply cannot fail to encode (only a length frame over
        // 4 GiB can); were it to, the client would wait for ever: close.
        if cx.send(&reply).is_err() || reply == b"BYE" {
            cx.close(); // after BYE is written; later requests are ignored
        }
    }

    fn close(&mut self, session: Session, closed: Closed, _: &mut Ctl<'_>) {
        debug!(
            "{} closed ({:?}) after {} requests",
            closed.id, closed.reason, session.requests
        );
    }
}

impl Kv {
    /// Runs one command and gives its reply line.
    fn execute(&mut self, command: &[u8], args: Option<&[u8]>, session: &Session) -> Vec<u8> {
        let cmd = |name: &str| command.eq_ignore_ascii_case(name.as_bytes());
        let reply: &[u8] = if cmd("SET") {
            match args.map(split_word) {
                Some((key, Some(value))) if !key.is_empty() => {
                    if self.map.len() >= MAX_KEYS && !self.map.contains_key(key) {
                        b"ERR store full"
                    } else {
                        self.map.insert(key.to_vec(), value.to_vec());
                        b"OK"
                    }
                }
                _ => b"ERR usage: SET <key> <value>",
            }
        } else if cmd("GET") {
            match key(args) {
                Some(key) => match self.map.get(key) {
                    Some(value) => return [b"VALUE ", &value[..]].concat(),
                    None => b"NOTFOUND",
                },
                None => b"ERR usage: GET <key>",
            }
        } else if cmd("DEL") {
            match key(args) {
                Some(key) => match self.map.remove(key) {
                    Some(_) => b"OK",
                    None => b"NOTFOUND",
                },
                None => b"ERR usage: DEL <key>",
            }
        } else if cmd("COUNT") && args.is_none() {
            return format!("OK {}", session.requests).into_bytes();
        } else if cmd("QUIT") && args.is_none() {
            b"BYE"
        } else {
            b"ERR unknown command (SET, GET, DEL, COUNT, QUIT)"
        };
        reply.to_vec()
    }
}

/// Splits at the first space: the word before it, and what follows (if a
/// space was there at all).
fn split_word(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    }
}

/// A lone key argument: non-empty, no spaces.
fn key(args: Option<&[u8]>) -> Option<&[u8]> {
    args.filter(|k| !k.is_empty() && !k.contains(&b' '))
}

/// The server settings: length framing on `path`, defaults otherwise.
pub fn config(path: impl AsRef<OsStr>) -> Config {
    let mut config = Config::new(path);
    config.framing = Framing::Length;
    config
}

#[allow(dead_code)] // unused where tests/handlers.rs includes this file
fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example kv -- PATH");
        return ExitCode::from(2);
    };
    // Logs "listening on PATH (stream, length)" once the socket is ready.
    let _ = simplelog::WriteLogger::init(
        LevelFilter::Info,
        simplelog::Config::default(),
        std::io::stderr(),
    );
    let result = Server::with_handler(config(path), Kv::default()).and_then(|mut server| {
        server.handle_signals()?;
        server.run()
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            // Exit statuses are this program's policy: 2 for bad settings.
            match e {
                Error::Config(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
