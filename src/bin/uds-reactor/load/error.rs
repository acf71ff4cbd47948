//! Why a load run failed: its setup, a verification, the server, a stall.

use std::fmt;
use std::io;
use std::time::Duration;

use uds_reactor::Error;

use super::fds::FdError;

/// Why a run failed.
#[derive(Debug)]
pub enum LoadError {
    /// Bad settings, or a socket could not be made or connected.
    Setup(Error),
    /// An echoed byte differs from the one sent.
    Verify {
        /// Connection index.
        conn: usize,
        /// Message number on that connection.
        message: u64,
        /// Byte offset in the message's wire form.
        offset: usize,
        /// What was sent.
        expected: u8,
        /// What came back.
        got: u8,
    },
    /// The descriptors that came back (`--fds`) are not the files sent,
    /// or too few or too many came.
    Fds {
        /// Connection index.
        conn: usize,
        /// Message number on that connection.
        message: u64,
        /// What was wrong.
        error: FdError,
    },
    /// An echoed message has the wrong length (message sockets).
    Length {
        /// Connection index.
        conn: usize,
        /// Message number on that connection.
        message: u64,
        /// Bytes sent.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// More bytes came back than were sent.
    Extra {
        /// Connection index.
        conn: usize,
        /// Bytes beyond what was sent.
        bytes: usize,
    },
    /// The server closed a connection that still owed echoes.
    Closed {
        /// Connection index.
        conn: usize,
        /// Messages echoed on it before.
        completed: u64,
        /// Messages in flight when it closed.
        outstanding: u64,
    },
    /// Reading or writing failed.
    Io {
        /// Connection index.
        conn: usize,
        /// `read`, `send`, ...
        step: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// No echo came back for this long.
    Stalled {
        /// How long nothing happened.
        waited: Duration,
        /// Messages in flight, all connections.
        outstanding: u64,
    },
}

impl LoadError {
    /// The process exit status for this error: 2 for bad settings, 1 for
    /// everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            LoadError::Setup(e) => crate::exit_code(e),
            _ => 1,
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Setup(e) => write!(f, "{e}"),
            LoadError::Verify {
                conn,
                message,
                offset,
                expected,
                got,
            } => write!(
                f,
                "verification error: connection {conn}, message {message}, byte {offset}: sent {expected:#04x}, echoed {got:#04x}"
            ),
            LoadError::Length {
                conn,
                message,
                expected,
                got,
            } => write!(
                f,
                "verification error: connection {conn}, message {message}: sent {expected} bytes, echoed {got}"
            ),
            LoadError::Fds {
                conn,
                message,
                error,
            } => write!(
                f,
                "verification error: connection {conn}, message {message}: {error}"
            ),
            LoadError::Extra { conn, bytes } => write!(
                f,
                "verification error: connection {conn}: {bytes} bytes echoed that were never sent"
            ),
            LoadError::Closed {
                conn,
                completed,
                outstanding,
            } => write!(
                f,
                "connection {conn} closed by the server after {completed} echoes, {outstanding} still owed"
            ),
            LoadError::Io { conn, step, source } => {
                write!(f, "{step} on connection {conn}: {source}")
            }
            LoadError::Stalled {
                waited,
                outstanding,
            } => write!(
                f,
                "stalled: no echo for {waited:?} with {outstanding} messages in flight"
            ),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<Error> for LoadError {
    fn from(e: Error) -> LoadError {
        LoadError::Setup(e)
    }
}
