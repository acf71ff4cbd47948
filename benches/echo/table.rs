//! Samples per (workload, server, repetition), reduced to medians with
//! min–max, and the markdown table.

use std::fmt::Write as _;

/// What one workload reports, and in which units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// msgs/s; server CPU in µs per message.
    Messages,
    /// MB/s; server CPU in seconds per GB.
    Bytes,
    /// conns/s; server CPU in µs per connection.
    Connections,
    /// Bytes of server RSS per idle connection (no rate, no CPU).
    Rss,
}

/// One run of one workload on one server.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// msgs/s, MB/s or conns/s; for [`Unit::Rss`], bytes per connection.
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Server CPU per unit (see [`Unit`]); NaN when not measured.
    pub cpu: f64,
}

/// Median, min, max of the finite values; None if there are none.
pub fn spread(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

/// A number with 3 significant figures, k/M suffixed when large.
pub fn num(x: f64) -> String {
    let (v, suffix) = if x.abs() >= 1e6 {
        (x / 1e6, "M")
    } else if x.abs() >= 1e4 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    // Three significant figures down to 0.001, then two.
    let digits = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        a if a >= 1.0 || a == 0.0 => 2,
        a => (2 - a.log10().floor() as i32).min(5) as usize,
    };
    format!("{v:.digits$}{suffix}")
}

/// "median (min–max)", or "median" when all agree to 3 figures, or "—".
pub fn cell(s: Option<(f64, f64, f64)>, unit: &str) -> String {
    match s {
        None => "—".into(),
        Some((m, lo, hi)) if num(lo) == num(hi) => format!("{}{unit}", num(m)),
        Some((m, lo, hi)) => format!("{}{unit} ({}–{})", num(m), num(lo), num(hi)),
    }
}

/// The results of one workload: `samples[server][rep]`.
pub struct Results<'a> {
    pub workload: &'a str,
    pub unit: Unit,
    pub servers: &'a [&'static str],
    pub samples: &'a [Vec<Option<Sample>>],
}

impl Results<'_> {
    /// Per-repetition ratios of server `s` to server `base` (if any), by
    /// `f`.
    fn ratio(
        &self,
        s: usize,
        base: Option<usize>,
        f: impl Fn(&Sample) -> f64,
    ) -> Option<(f64, f64, f64)> {
        let pairs = self.samples[s].iter().zip(&self.samples[base?]);
        spread(pairs.filter_map(|(a, b)| Some(f(a.as_ref()?) / f(b.as_ref()?))))
    }

    fn of(&self, s: usize, f: impl Fn(&Sample) -> f64) -> Option<(f64, f64, f64)> {
        spread(self.samples[s].iter().flatten().map(f))
    }

    /// Appends this workload's rows to `out`, with ratios to the servers
    /// at `tokio` and `raw` (when the workload has them).
    pub fn rows(&self, out: &mut String, tokio: Option<usize>, raw: Option<usize>) {
        for (s, name) in self.servers.iter().enumerate() {
            let rate = |x: &Sample| x.rate;
            let cpu = |x: &Sample| x.cpu;
            let (rate_unit, cpu_unit) = match self.unit {
                Unit::Messages => (" msg/s", " µs/msg"),
                Unit::Bytes => (" MB/s", " s/GB"),
                Unit::Connections => (" conn/s", " µs/conn"),
                Unit::Rss => (" B/conn", ""),
            };
            let mut line = format!(
                "| {} | {name} | {} |",
                self.workload,
                cell(self.of(s, rate), rate_unit)
            );
            if self.unit == Unit::Rss {
                let _ = write!(
                    line,
                    " — | — | — | {} | — | {} | — |",
                    cell(self.ratio(s, tokio, rate), "×"),
                    cell(self.ratio(s, raw, rate), "×"),
                );
            } else {
                let _ = write!(
                    line,
                    " {} | {} | {} | {} | {} | {} | {} |",
                    cell(self.of(s, |x| x.p50_us), " µs"),
                    cell(self.of(s, |x| x.p99_us), " µs"),
                    cell(self.of(s, cpu), cpu_unit),
                    cell(self.ratio(s, tokio, rate), "×"),
                    cell(self.ratio(s, tokio, cpu), "×"),
                    cell(self.ratio(s, raw, rate), "×"),
                    cell(self.ratio(s, raw, cpu), "×"),
                );
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
}

/// The table's header. "tokio" is the workload's tokio peer (tokio-ct,
/// tokio-dgram; none for seqpacket and descriptors), "raw" its raw-epoll
/// peer (raw-epoll, raw-epoll-seqpacket, raw-epoll-dgram, raw-epoll-fds).
pub const HEADER: &str = "\
| workload | server | throughput (or RSS) | p50 | p99 | server CPU | rate ÷ tokio | CPU ÷ tokio | rate ÷ raw | CPU ÷ raw |
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|
";
