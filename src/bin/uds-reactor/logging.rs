//! The server's log: its level from the command line, its format for a
//! terminal or for journald.
//!
//! On a terminal (or a file), simplelog writes `<time> [LEVEL] message`.
//! When stderr is the journal, each line is `<N>message` instead: `N` is
//! the syslog priority as sd-daemon(3) defines the prefix, which journald
//! strips and stores as the line's `PRIORITY=` (so `journalctl -p warning`
//! filters on it), and no time, since journald stamps every line itself.
//! simplelog has no hook to put the priority before its line, so that
//! case is [`Journal`], a minimal `log::Log` of our own.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use log::{Level, LevelFilter, Log, Metadata, Record};
use simplelog::{ConfigBuilder, WriteLogger};

/// Only our own crate's lines are logged: mio's trace lines are noise to
/// an operator. (The binary's crate has the library's name.)
const OURS: &str = "uds_reactor";

/// `--log-level` stepped up by `-v` and down by `-q`.
pub fn level(base: LevelFilter, verbose: u8, quiet: u8) -> LevelFilter {
    const LEVELS: [LevelFilter; 6] = [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ];
    let at = LEVELS.iter().position(|l| *l == base).unwrap_or(3) as i32;
    let at = (at + i32::from(verbose) - i32::from(quiet)).clamp(0, 5);
    LEVELS[at as usize]
}

/// Logs to stderr, one line each, without module paths, and only our own
/// crate's lines: with priority prefixes and no time when stderr is the
/// journal ([`stderr_is_journal`]), else through simplelog with RFC 3339
/// times.
pub fn init(level: LevelFilter) {
    // Either fails only if a logger is already set, which cannot happen here.
    if stderr_is_journal() {
        if log::set_boxed_logger(Box::new(Journal { level })).is_ok() {
            log::set_max_level(level);
        }
        return;
    }
    let config = ConfigBuilder::new()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_allow_str(OURS)
        .set_time_format_rfc3339()
        .build();
    let _ = WriteLogger::init(level, config, io::stderr());
}

/// Whether stderr is connected to the journal: systemd sets
/// `JOURNAL_STREAM` to `DEV:INODE` of the stream it gave the service, and
/// stderr must still be that stream (a script in between may have sent it
/// to a file, which wants its timestamps).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(parse_stream) else {
        return false;
    };
    // fstat(2) of descriptor 2, through a duplicate the File owns.
    let stderr = match io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => std::fs::File::from(fd),
        Err(_) => return false,
    };
    stderr
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// `DEV:INODE`, both decimal, as systemd writes `JOURNAL_STREAM`.
fn parse_stream(s: &str) -> Option<(u64, u64)> {
    let (dev, ino) = s.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The sd-daemon(3) prefix for `level`: `<3>` error, `<4>` warn,
/// `<6>` info, `<7>` debug and trace.
fn priority(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

/// The logger for stderr under journald: `<N>message`, one write per
/// record (a pipe to journald must not interleave half lines), and a
/// message of several lines gets the prefix on each, so no line of it
/// lands at the journal's default priority.
struct Journal {
    level: LevelFilter,
}

impl Journal {
    /// The bytes written for one record.
    fn format(record: &Record<'_>) -> String {
        let prefix = priority(record.level());
        let message = record.args().to_string();
        let mut out = String::with_capacity(message.len() + 8);
        for line in message.split('\n') {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{prefix}{line}");
        }
        out
    }
}

impl Log for Journal {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level && metadata.target().starts_with(OURS)
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            // Nowhere to report a failed write to the log itself.
            let _ = io::stderr()
                .lock()
                .write_all(Journal::format(record).as_bytes());
        }
    }

    fn flush(&self) {
        let _ = io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formatted(level: Level, message: &str) -> String {
        Journal::format(
            &Record::builder()
                .level(level)
                .target(OURS)
                .args(format_args!("{message}"))
                .build(),
        )
    }

    #[test]
    fn each_level_gets_its_sd_daemon_priority() {
        assert_eq!(formatted(Level::Error, "e"), "<3>e\n");
        assert_eq!(formatted(Level::Warn, "w"), "<4>w\n");
        assert_eq!(formatted(Level::Info, "i"), "<6>i\n");
        assert_eq!(formatted(Level::Debug, "d"), "<7>d\n");
        assert_eq!(formatted(Level::Trace, "t"), "<7>t\n");
    }

    #[test]
    fn every_line_of_a_message_is_prefixed() {
        assert_eq!(formatted(Level::Warn, "a\nb"), "<4>a\n<4>b\n");
    }

    #[test]
    fn only_our_lines_at_or_above_the_level() {
        let journal = Journal {
            level: LevelFilter::Info,
        };
        let at = |level, target| {
            journal.enabled(&Metadata::builder().level(level).target(target).build())
        };
        assert!(at(Level::Warn, "uds_reactor::server"));
        assert!(!at(Level::Debug, "uds_reactor::server"));
        assert!(!at(Level::Warn, "mio::poll"));
    }

    #[test]
    fn journal_stream_is_dev_colon_inode() {
        assert_eq!(parse_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
    }
}
