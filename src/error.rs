//! Setup and runtime errors, each naming what failed and where.
//!
//! Frame errors (an oversized frame, say) are not here: they end one
//! connection and live in [`crate::codec::FrameError`].

use std::fmt;
use std::io;

/// An error that stops the server (or keeps it from starting).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A bad combination of settings (or nothing to listen on): a usage
    /// error, which the `uds-reactor` binary reports with exit status 2.
    Config(String),
    /// A system call failed: `step` is what we were doing (`bind`, `listen`,
    /// `chmod`, ...), `target` the path or object it was done to.
    Io {
        /// The failing step, as a verb: `bind`, `listen`, `chmod`, ...
        step: &'static str,
        /// The path (or other object) the step was applied to.
        target: String,
        /// What the system said.
        source: io::Error,
    },
    /// Another server is already listening on the address.
    InUse(String),
    /// The path exists and is not a socket; nothing was touched.
    NotSocket(String),
    /// The path does not fit in `sun_path` (at most 107 bytes on Linux).
    PathTooLong(String),
    /// The parent directory of the socket path does not exist.
    NoParent(String),
    /// An inherited (socket-activated) descriptor is not what we serve.
    Activation(String),
}

impl Error {
    /// Builds an [`Error::Io`].
    pub fn io(step: &'static str, target: impl fmt::Display, source: io::Error) -> Error {
        Error::Io {
            step,
            target: target.to_string(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => f.write_str(msg),
            Error::Io {
                step,
                target,
                source,
            } => write!(f, "{step} {target}: {source}"),
            Error::InUse(addr) => write!(f, "bind {addr}: a server is already listening there"),
            Error::NotSocket(path) => write!(
                f,
                "bind {path}: the path exists and is not a socket; refusing to touch it"
            ),
            Error::PathTooLong(path) => write!(
                f,
                "bind {path}: path too long for a Unix socket address (at most 107 bytes)"
            ),
            Error::NoParent(path) => {
                write!(f, "bind {path}: the parent directory does not exist")
            }
            Error::Activation(msg) => write!(f, "socket activation: {msg}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
