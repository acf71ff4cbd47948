//! How the server's log lines name peers and keep repeated warnings to one
//! line a second.

use std::fmt;
use std::time::{Duration, Instant};

use crate::handler::PeerCred;

/// A peer as logged: `pid=1 uid=2 gid=3`, `?` for what is unknown.
/// Formatted only if its line is logged: no allocation per close.
pub(crate) struct Who(pub(crate) Option<PeerCred>);

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) => p.fmt(f),
            None => f.write_str("pid=? uid=? gid=?"),
        }
    }
}

/// Rate-limits one kind of warning to one line per second, counting the
/// occurrences it skipped. One per kind: counts never mix two causes.
#[derive(Debug, Default)]
pub(crate) struct RateLimited {
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    /// Records one occurrence; returns the count to report (this one and
    /// those skipped since the last line) if a line is due.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}
