//! The systemd watchdog: `WATCHDOG=1` to `NOTIFY_SOCKET` every half of
//! `WATCHDOG_USEC`, sent by the loop itself.
//!
//! The ping is one more deadline of the loop, folded into its poll timeout
//! like every other: no thread, no timer of the kernel's. A loop stuck in
//! a callback or a busy turn stops pinging, and systemd, seeing no ping for
//! a whole period, restarts the service. That is the point of it.
//!
//! ```text
//! start          +period/2       +period         (systemd's limit)
//!   |--- ping ------|--- ping ------|--- ping ...
//! ```

use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::sys;

/// When the next `WATCHDOG=1` is due, and how often they go.
#[derive(Debug)]
pub(super) struct Watchdog {
    /// Half of `WATCHDOG_USEC`: sd_watchdog_enabled(3)'s advice, so a ping
    /// a little late still lands within the period.
    every: Duration,
    /// The next ping is due then.
    next: Instant,
    /// A failed ping was logged at warn already; later ones go to debug
    /// (one line, not one every few seconds).
    warned: bool,
}

impl Watchdog {
    /// The watchdog systemd asked for, if any: `WATCHDOG_USEC` set to a
    /// positive number of microseconds, `WATCHDOG_PID` unset or ours, and
    /// `NOTIFY_SOCKET` set. The first ping is due at once. A variable that
    /// does not parse is one warn line, and no watchdog.
    pub(super) fn from_env(now: Instant) -> Option<Watchdog> {
        let usec = std::env::var("WATCHDOG_USEC").ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            match pid.trim().parse::<u32>() {
                Ok(pid) if pid == std::process::id() => {}
                Ok(_) => return None, // meant for another process
                Err(_) => {
                    warn!("WATCHDOG_PID='{pid}' is not a pid; the watchdog is off");
                    return None;
                }
            }
        }
        let period = match usec.trim().parse::<u64>() {
            Ok(us) if us > 0 => Duration::from_micros(us),
            _ => {
                warn!("WATCHDOG_USEC='{usec}' is not a positive number of microseconds; the watchdog is off");
                return None;
            }
        };
        if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
            warn!("WATCHDOG_USEC is set but NOTIFY_SOCKET is not; the watchdog is off");
            return None;
        }
        Some(Watchdog {
            every: period / 2,
            next: now,
            warned: false,
        })
    }

    /// When the loop must wake for the next ping.
    pub(super) fn deadline(&self) -> Instant {
        self.next
    }

    /// Pings if due. The next ping is set from this one's deadline (so
    /// the cadence does not drift by the poll's rounding), or from `now`
    /// if the loop fell more than a whole interval behind.
    pub(super) fn tick(&mut self, now: Instant) {
        if now < self.next {
            return;
        }
        if let Err(e) = sys::notify("WATCHDOG=1") {
            if self.warned {
                debug!("notify WATCHDOG=1: {e}");
            } else {
                warn!("notify WATCHDOG=1: {e}");
                self.warned = true;
            }
        }
        self.next += self.every;
        if self.next <= now {
            self.next = now + self.every;
        }
    }
}
