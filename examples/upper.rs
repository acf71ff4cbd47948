//! An uppercasing line server: each line received is answered with the
//! same line, ASCII letters uppercased (other bytes pass through).
//!
//! Run it:
//!
//! ```text
//! cargo run --example upper -- /tmp/upper.sock
//! ```
//!
//! and talk to it from another terminal:
//!
//! ```text
//! printf 'hello\nworld\n' | socat - UNIX-CONNECT:/tmp/upper.sock
//! python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.connect("/tmp/upper.sock"); s.sendall(b"hello\n"); print(s.recv(64))'
//! ```
//!
//! Replies go through [`Context::send`], so line framing adds the `\n`: a
//! last line without one (the peer shut down its write side mid-line) is
//! still answered with a whole line. Ctrl-C (SIGINT) or SIGTERM stops the
//! server and removes the socket file.
//!
//! `tests/handlers.rs` includes this file as a module and runs [`Upper`]
//! with [`config`].

use std::ffi::OsStr;
use std::process::ExitCode;

use log::LevelFilter;
use uds_reactor::{Config, Context, Error, Frame, Framing, Handler, Server};

/// Replies to each line with the line uppercased.
#[derive(Clone, Copy, Debug, Default)]
pub struct Upper;

impl Handler for Upper {
    type State = ();

    fn open(&mut self, _: &mut Context<'_>) {}

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        // A line always encodes (only a length frame over 4 GiB cannot).
        let _ = cx.send(&frame.payload().to_ascii_uppercase());
    }
}

/// The server settings: line framing on `path`, defaults otherwise.
pub fn config(path: impl AsRef<OsStr>) -> Config {
    let mut config = Config::new(path);
    config.framing = Framing::Line;
    config
}

#[allow(dead_code)] // unused where tests/handlers.rs includes this file
fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example upper -- PATH");
        return ExitCode::from(2);
    };
    // Logs "listening on PATH (stream, line)" once the socket is ready.
    let _ = simplelog::WriteLogger::init(
        LevelFilter::Info,
        simplelog::Config::default(),
        std::io::stderr(),
    );
    let result = Server::with_handler(config(path), Upper).and_then(|mut server| {
        server.handle_signals()?;
        server.run()
    });
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upper: {e}");
            // Exit statuses are this program's policy: 2 for bad settings.
            match e {
                Error::Config(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
