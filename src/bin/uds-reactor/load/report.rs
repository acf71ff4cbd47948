//! What a load run reports: counts, rates and latency, as a summary for
//! people or one JSON object for scripts (the benches read it).

use std::fmt;
use std::time::Duration;

use super::histogram::Histogram;
use super::LoadConfig;

/// What a run did. Every message counted was echoed and checked byte for
/// byte; a run with any error returns [`LoadError`](super::LoadError)
/// instead.
#[derive(Clone, Debug)]
pub struct Report {
    /// Messages echoed (one per connection in churn mode).
    pub messages: u64,
    /// Wire bytes echoed, one way (headers and newlines included).
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// Descriptors that came back and were checked (`--fds`).
    pub fds: u64,
    /// From the first connect to the last echo.
    pub elapsed: Duration,
    /// Round-trip time of each message, in nanoseconds: from when the
    /// window admitted it to when its last byte came back.
    pub latency: Histogram,
}

impl Report {
    /// Messages per second.
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.secs()
    }

    /// Megabytes (10^6 bytes) echoed per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.secs()
    }

    /// Descriptors come back per second.
    pub fn fds_per_sec(&self) -> f64 {
        self.fds as f64 / self.secs()
    }

    /// Connections opened per second.
    pub fn conns_per_sec(&self) -> f64 {
        self.connections as f64 / self.secs()
    }

    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as one JSON object, with `config`'s settings.
    pub fn to_json(&self, config: &LoadConfig) -> String {
        let us = |ns: u64| format!("{:.1}", ns as f64 / 1e3);
        let h = &self.latency;
        format!(
            concat!(
                "{{\"type\":\"{}\",\"framing\":\"{}\",\"connections\":{},\"size\":{},",
                "\"pipeline\":{},\"churn\":{},\"fds_per_msg\":{},\"messages\":{},\"bytes\":{},\"fds\":{},",
                "\"connections_opened\":{},\"errors\":0,\"seconds\":{:.6},",
                "\"msgs_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"fds_per_sec\":{:.1},\"conns_per_sec\":{:.1},",
                "\"latency_us\":{{\"min\":{},\"mean\":{},\"p50\":{},\"p99\":{},",
                "\"p999\":{},\"max\":{}}}}}"
            ),
            config.socket_type,
            config.framing,
            config.connections,
            config.size,
            config.pipeline,
            config.churn,
            config.fds,
            self.messages,
            self.bytes,
            self.fds,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.mb_per_sec(),
            self.fds_per_sec(),
            self.conns_per_sec(),
            us(h.min()),
            us(h.mean()),
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(h.max()),
        )
    }

    /// The human-readable summary, with `config`'s settings.
    pub fn summary(&self, config: &LoadConfig) -> String {
        let h = &self.latency;
        let mut s = format!(
            "{}/{}: {} connections, {}-byte messages, pipeline {}{}{}\n",
            config.socket_type,
            config.framing,
            config.connections,
            config.size,
            config.pipeline,
            if config.churn { ", churn" } else { "" },
            match config.fds {
                0 => String::new(),
                k => format!(", {k} descriptors per message"),
            },
        );
        s += &format!(
            "  messages    {} in {:.3} s: {:.0} msgs/s, {:.2} MB/s\n",
            self.messages,
            self.elapsed.as_secs_f64(),
            self.msgs_per_sec(),
            self.mb_per_sec()
        );
        if config.fds > 0 {
            s += &format!(
                "  descriptors {} back: {:.0} fds/s\n",
                self.fds,
                self.fds_per_sec()
            );
        }
        if config.churn {
            s += &format!(
                "  connections {} opened: {:.0} conns/s\n",
                self.connections,
                self.conns_per_sec()
            );
        }
        s += &format!(
            "  latency     p50 {}  p99 {}  p99.9 {}  max {}\n",
            Nanos(h.quantile(0.5)),
            Nanos(h.quantile(0.99)),
            Nanos(h.quantile(0.999)),
            Nanos(h.max())
        );
        s += if config.fds > 0 {
            "  errors      0 (every echoed byte and descriptor checked)\n"
        } else {
            "  errors      0 (every echoed byte checked)\n"
        };
        s
    }
}

/// A duration in nanoseconds, shown in the handiest unit.
pub struct Nanos(pub u64);

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0 as f64;
        if ns < 1e3 {
            write!(f, "{ns:.0} ns")
        } else if ns < 1e6 {
            write!(f, "{:.1} us", ns / 1e3)
        } else if ns < 1e9 {
            write!(f, "{:.2} ms", ns / 1e6)
        } else {
            write!(f, "{:.2} s", ns / 1e9)
        }
    }
}
