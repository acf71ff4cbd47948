//! The server's counters: kept as plain integers by the loop, published
//! to atomics once per loop turn so other threads can read them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// A snapshot of the server's counters. `Display` gives the logfmt
        /// line logged on SIGUSR1 and at shutdown.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $($(#[$doc])* pub $name: u64,)*
        }

        /// The published copy of [`Stats`], readable from any thread.
        #[derive(Debug, Default)]
        pub(crate) struct SharedStats {
            $($name: AtomicU64,)*
        }

        impl SharedStats {
            pub(crate) fn publish(&self, s: &Stats) {
                $(self.$name.store(s.$name, Relaxed);)*
            }

            pub(crate) fn load(&self) -> Stats {
                Stats { $($name: self.$name.load(Relaxed),)* }
            }
        }

        impl fmt::Display for Stats {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("stats")?;
                $(write!(f, concat!(" ", stringify!($name), "={}"), self.$name)?;)*
                Ok(())
            }
        }
    };
}

counters! {
    /// Connections open now.
    open,
    /// Connections accepted and served.
    accepted,
    /// Connections refused by `--max-connections`.
    rejected,
    /// Connections (or datagrams) refused by `--allow-uid`/`--allow-gid`.
    rejected_cred,
    /// Connections closed.
    closed,
    /// Connections closed by `--idle-timeout`.
    closed_idle,
    /// Failed accepts (out of descriptors, ...).
    accept_errors,
    /// Bytes received.
    bytes_in,
    /// Bytes sent.
    bytes_out,
    /// Frames (or messages, or datagrams) received.
    frames_in,
    /// Frames sent.
    frames_out,
    /// Datagrams dropped (oversize, unanswerable sender, vanished peer)
    /// and partial frames dropped at EOF.
    dropped,
}
