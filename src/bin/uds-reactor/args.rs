//! Value parsers the server, the client and the load generator share, so
//! each option's spelling and choices are declared once.

use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use log::LevelFilter;

use uds_reactor::{Framing, SocketType};

/// `--type`: one of the library's socket types, by the names it gives
/// them (clap lists them in `--help` and in errors).
pub fn socket_type() -> impl TypedValueParser<Value = SocketType> {
    let names =
        [SocketType::Stream, SocketType::Seqpacket, SocketType::Dgram].map(SocketType::as_str);
    // Every name clap lets through is one `from_str` knows.
    PossibleValuesParser::new(names).try_map(|s| s.parse::<SocketType>())
}

/// `--framing`: one of the library's framings, by the names it gives them.
pub fn framing() -> impl TypedValueParser<Value = Framing> {
    let names = [Framing::Raw, Framing::Line, Framing::Length].map(Framing::as_str);
    PossibleValuesParser::new(names).try_map(|s| s.parse::<Framing>())
}

/// Parses whole or fractional seconds.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
}

/// Parses `--log-level`, listing the choices when the value is not one.
pub fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not a log level (off, error, warn, info, debug, trace)"))
}
