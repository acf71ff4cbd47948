//! Server settings: every command-line flag has a field here, with SPEC's
//! defaults. Pure data and validation (an address's `sockaddr_un` is built
//! here too; that is no I/O either).

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use socket2::SockAddr;

use crate::error::Error;

/// The kind of Unix socket served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SocketType {
    /// `SOCK_STREAM`: a byte stream, cut into frames by [`Framing`].
    Stream,
    /// `SOCK_SEQPACKET`: connected, reliable, message boundaries kept.
    Seqpacket,
    /// `SOCK_DGRAM`: connectionless datagrams, each answered to its sender.
    Dgram,
}

impl SocketType {
    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            SocketType::Stream => "stream",
            SocketType::Seqpacket => "seqpacket",
            SocketType::Dgram => "dgram",
        }
    }

    /// Whether the type is connection-oriented (has an accepting listener).
    pub fn is_connected(self) -> bool {
        !matches!(self, SocketType::Dgram)
    }
}

impl fmt::Display for SocketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SocketType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stream" => Ok(SocketType::Stream),
            "seqpacket" => Ok(SocketType::Seqpacket),
            "dgram" => Ok(SocketType::Dgram),
            _ => Err(format!(
                "unknown socket type '{s}' (stream, seqpacket, dgram)"
            )),
        }
    }
}

/// How a byte stream is cut into frames. See [`crate::codec`] for the wire
/// formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// Every read is a frame: a plain byte pipe.
    Raw,
    /// Frames end at `\n`, the newline included.
    Line,
    /// A 4-byte big-endian length, then that many payload bytes.
    Length,
}

impl Framing {
    /// The name used on the command line and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Line => "line",
            Framing::Length => "length",
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Framing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Framing::Raw),
            "line" => Ok(Framing::Line),
            "length" => Ok(Framing::Length),
            _ => Err(format!("unknown framing '{s}' (raw, line, length)")),
        }
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A filesystem path: the server creates the socket file and removes it
    /// at shutdown if it is still its own.
    Path(PathBuf),
    /// A Linux abstract-namespace name (written `@name`): no file at all.
    Abstract(Vec<u8>),
}

impl Address {
    /// Parses `@name` as abstract and anything else as a path.
    pub fn parse(s: &OsStr) -> Address {
        match s.as_bytes() {
            [b'@', name @ ..] => Address::Abstract(name.to_vec()),
            _ => Address::Path(PathBuf::from(s)),
        }
    }

    /// The `sockaddr_un` of this address, to bind or connect a
    /// `socket2::Socket` (an abstract name gets its leading NUL).
    ///
    /// # Errors
    ///
    /// [`Error::PathTooLong`] when it does not fit in `sun_path` (107 bytes
    /// of path or of abstract name); [`Error::Config`] for an empty path or
    /// one containing a NUL byte.
    pub fn to_sock_addr(&self) -> Result<SockAddr, Error> {
        if let Address::Path(path) = self {
            let bytes = path.as_os_str().as_bytes();
            if bytes.is_empty() {
                return Err(Error::Config("the socket path is empty".into()));
            }
            if bytes.contains(&0) {
                return Err(Error::Config(format!(
                    "socket path {} contains a NUL byte",
                    path.display()
                )));
            }
        }
        self.raw_sock_addr()
            .map_err(|_| Error::PathTooLong(self.to_string()))
    }

    /// [`to_sock_addr`](Self::to_sock_addr) without its checks, keeping
    /// `socket2`'s own error (for callers that report an `io::Error`).
    pub(crate) fn raw_sock_addr(&self) -> io::Result<SockAddr> {
        match self {
            Address::Path(path) => SockAddr::unix(path),
            Address::Abstract(name) => {
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(OsStr::from_bytes(&bytes))
            }
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Path(p) => write!(f, "{}", p.display()),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// The group that owns the socket file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    /// A numeric gid.
    Id(u32),
    /// A group name, looked up when the socket is bound.
    Name(String),
}

impl FromStr for Group {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty group".into());
        }
        Ok(match s.parse::<u32>() {
            // chown(2) reads (gid_t)-1 as "leave the group as it is".
            Ok(u32::MAX) => {
                return Err(format!(
                    "{s} is not a group id (chown reads it as 'no change')"
                ))
            }
            Ok(gid) => Group::Id(gid),
            Err(_) => Group::Name(s.to_owned()),
        })
    }
}

/// Every setting of the server; [`Config::new`] gives SPEC's defaults.
///
/// # Examples
///
/// ```
/// use uds_reactor::{Config, Framing};
///
/// let mut config = Config::new("/tmp/echo.sock");
/// config.framing = Framing::Line;
/// config.max_frame = 64 * 1024;
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen. `None` only with socket activation, where the
    /// listener is inherited as descriptor 3.
    pub address: Option<Address>,
    /// Socket type (`--type`).
    pub socket_type: SocketType,
    /// Stream framing (`--framing`); must be `Raw` for other types.
    pub framing: Framing,
    /// Largest frame payload accepted, in bytes (`--max-frame`).
    pub max_frame: usize,
    /// Per-connection cap on unsent output, in bytes (`--max-buffer`).
    pub max_buffer: usize,
    /// Exact permissions of the socket file (`--mode`).
    pub mode: u32,
    /// Group owner of the socket file (`--group`).
    pub group: Option<Group>,
    /// Peer uids allowed (`--allow-uid`); with `allow_gids`, empty = everyone.
    pub allow_uids: Vec<u32>,
    /// Peer gids allowed (`--allow-gid`).
    pub allow_gids: Vec<u32>,
    /// Connection cap (`--max-connections`); `None` = what the open-file
    /// limit allows.
    pub max_connections: Option<usize>,
    /// Close connections idle for this long (`--idle-timeout`); `None` = never.
    pub idle_timeout: Option<Duration>,
    /// How long pending output may still be flushed at shutdown.
    pub drain_timeout: Duration,
    /// Descriptors one received message may carry (`--max-fds`, at most
    /// 253); they go back with its echo. 0 (the default): none are taken
    /// (the kernel closes any a peer sends) and reads are plain reads.
    pub max_fds: usize,
    /// Listen backlog (`--backlog`).
    pub backlog: i32,
    /// How many messages other threads may have sent
    /// ([`Handle::send`](crate::Handle::send)) that the loop has not taken
    /// yet; past it, a send fails with
    /// [`MessageError::Full`](crate::MessageError::Full). Default 1024.
    pub message_queue: usize,
    /// Honour systemd socket activation (`LISTEN_PID`/`LISTEN_FDS`: take
    /// descriptor 3, once per process), send readiness notifications
    /// (`READY=1`, `STOPPING=1` to `NOTIFY_SOCKET`) and, with
    /// `WATCHDOG_USEC` set (and `WATCHDOG_PID` unset or this process),
    /// `WATCHDOG=1` from the loop every half of that period. The one setting that
    /// reads the environment, which is only read, never edited. On in the
    /// binary; off by default in the library, so an embedded server never
    /// speaks for its host program to the service manager.
    pub systemd: bool,
    /// A second stream socket answering `GET /metrics` with the counters
    /// in the Prometheus text format (`--metrics`); its file follows the
    /// same rules as the main one (exact `mode` and `group`, a stale one
    /// replaced, a live one refused, removed only if still ours).
    pub metrics: Option<Address>,
}

impl Config {
    /// SPEC's defaults, listening on `address` (`@name` = abstract).
    pub fn new(address: impl AsRef<OsStr>) -> Config {
        Config {
            address: Some(Address::parse(address.as_ref())),
            ..Config::default()
        }
    }

    /// Whether credential checks are configured.
    pub fn checks_credentials(&self) -> bool {
        !self.allow_uids.is_empty() || !self.allow_gids.is_empty()
    }

    /// Whether a peer with these ids may be served.
    pub fn allows(&self, uid: u32, gid: u32) -> bool {
        !self.checks_credentials()
            || self.allow_uids.contains(&uid)
            || self.allow_gids.contains(&gid)
    }

    /// Checks the combination of settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the offending option: a framing other than
    /// `raw` with a message-based type, a zero `--max-frame`,
    /// `--max-buffer`, `--backlog` or `--max-connections`, `--max-fds`
    /// over 253, a mode outside
    /// `0..=0o777`, socket-file options with no socket file to apply them
    /// to, or a metrics address that is the served one.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.socket_type != SocketType::Stream && self.framing != Framing::Raw {
            return bad(format!(
                "--framing {} applies to stream sockets only; {} sockets keep message boundaries already",
                self.framing, self.socket_type
            ));
        }
        if self.max_frame == 0 {
            return bad("--max-frame must be at least 1".into());
        }
        if self.max_frame > u32::MAX as usize {
            return bad(format!("--max-frame must be at most {} (4G - 1)", u32::MAX));
        }
        if self.max_buffer == 0 {
            return bad("--max-buffer must be at least 1".into());
        }
        if self.max_fds > crate::fds::MAX_FDS {
            return bad(format!(
                "--max-fds must be at most {} (the kernel's SCM_MAX_FD)",
                crate::fds::MAX_FDS
            ));
        }
        if self.backlog <= 0 {
            return bad("--backlog must be at least 1".into());
        }
        if self.max_connections == Some(0) {
            return bad("--max-connections must be at least 1".into());
        }
        if self.mode > 0o777 {
            return bad(format!(
                "--mode {:o} is not a permission mode (000-777)",
                self.mode
            ));
        }
        let metrics_file = matches!(self.metrics, Some(Address::Path(_)));
        if let Some(Address::Abstract(name)) = &self.address {
            if self.group.is_some() && !metrics_file {
                return bad("--group applies to socket files; an abstract address has none".into());
            }
            if name.is_empty() {
                return bad("abstract address '@' needs a name".into());
            }
        }
        if let Some(metrics) = &self.metrics {
            if Some(metrics) == self.address.as_ref() {
                return bad(format!("--metrics {metrics} is the address served already"));
            }
            if matches!(metrics, Address::Abstract(name) if name.is_empty()) {
                return bad("--metrics: abstract address '@' needs a name".into());
            }
        }
        if self.address.is_none() && !self.systemd {
            return bad("no address to listen on".into());
        }
        Ok(())
    }
}

impl Default for Config {
    /// SPEC's defaults with no address: set one before binding.
    fn default() -> Config {
        Config {
            address: None,
            socket_type: SocketType::Stream,
            framing: Framing::Raw,
            max_frame: 1 << 20,
            max_buffer: 256 << 10,
            mode: 0o600,
            group: None,
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            max_connections: None,
            idle_timeout: None,
            drain_timeout: Duration::from_secs(5),
            max_fds: 0,
            backlog: 1024,
            message_queue: 1024,
            systemd: false,
            metrics: None,
        }
    }
}

/// Parses a size: plain bytes or a `K`/`M`/`G` suffix (powers of 1024).
///
/// ```
/// assert_eq!(uds_reactor::config::parse_size("64K"), Ok(65536));
/// assert_eq!(uds_reactor::config::parse_size("1m"), Ok(1 << 20));
/// assert!(uds_reactor::config::parse_size("12Q").is_err());
/// ```
///
/// # Errors
///
/// A message when the text is not a number with an optional suffix or the
/// value overflows `usize`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, shift) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses a permission mode written in octal (`600`, `0660`).
///
/// # Errors
///
/// A message when the text is not octal or exceeds `777`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("'{s}' is not an octal permission mode (000-777)")),
    }
}
