//! The server's log: its level from the command line, its format for a
//! terminal or for journald.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

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
/// crate's lines (mio's trace lines are noise to an operator). Under
/// journald (`JOURNAL_STREAM` set) the journal stamps each line itself, so
/// ours carry no time.
pub fn init(level: LevelFilter) {
    let mut builder = ConfigBuilder::new();
    builder
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_allow_str("uds_reactor")
        .set_time_format_rfc3339();
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.set_time_level(LevelFilter::Off);
    }
    let config = builder.build();
    // Only fails if a logger is already set, which cannot happen here.
    let _ = WriteLogger::init(level, config, std::io::stderr());
}
