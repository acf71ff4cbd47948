//! The server's counters: kept as plain integers by the loop, published
//! to atomics once per loop turn so other threads can read them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// One counter of the stats line, as [`Stats::counters`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counter {
    /// Its key in the stats line (`bytes_in`).
    pub(crate) key: &'static str,
    /// What it counts: the field's doc comment.
    pub(crate) help: &'static str,
    pub(crate) value: u64,
}

/// The one table of counters below makes the struct, its atomic copy, the
/// stats line and the list of [`Counter`]s the metrics endpoint renders:
/// a counter added there appears in all of them.
macro_rules! counters {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// A snapshot of the server's counters. `Display` gives the logfmt
        /// line logged on SIGUSR1 and at shutdown.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        #[non_exhaustive]
        pub struct Stats {
            $($(#[doc = $doc])* pub $name: u64,)*
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

        impl Stats {
            /// How many counters there are.
            const COUNT: usize = [$(stringify!($name)),*].len();

            /// Every counter, in the stats line's order.
            pub(crate) fn counters(&self) -> [Counter; Stats::COUNT] {
                [$(Counter {
                    key: stringify!($name),
                    help: concat!($($doc),*),
                    value: self.$name,
                },)*]
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
    /// Frames sent: replies and pushes queued to a connection; on a
    /// datagram socket, datagrams as they are sent (to any address).
    frames_out,
    /// Datagrams dropped (oversize, unanswerable sender, vanished peer)
    /// and partial frames dropped at EOF.
    dropped,
    /// Descriptors received (`--max-fds`).
    fds_in,
    /// Descriptors sent.
    fds_out,
    /// Connections closed, or datagrams dropped, because descriptors were
    /// over `--max-fds` or lost by the kernel (the server out of them).
    fd_errors,
}
