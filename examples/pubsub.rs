//! A publish/subscribe broker over line frames: each message is pushed
//! to every subscriber of its topic, and a subscriber that cannot keep up
//! is dropped instead of buffered for without bound.
//!
//! # Protocol
//!
//! ```text
//! request                    reply (one line per command)
//! SUB <topic>                +OK
//! UNSUB <topic>              +OK              (also when not subscribed)
//! PUB <topic> <payload>      :<n>             n = subscribers it was queued to
//! anything else              -ERR <why>       the connection stays open
//! ```
//!
//! Each subscriber of the topic gets `MSG <topic> <payload>`, in publish
//! order; a publisher subscribed to its own topic gets its `MSG` before
//! its `:<n>` (and is counted). Command names are case-insensitive. A
//! topic is 1 to 64 bytes without spaces; topics starting with `$` are the
//! server's (subscribe only). The payload is everything after the space
//! that follows the topic: `PUB t ` publishes an empty one, `PUB t` (no
//! separator) is an error. A `MSG` line too long to ever fit
//! `--max-buffer` is refused; a connection holds at most
//! [`MAX_SUBSCRIPTIONS`] subscriptions.
//!
//! A subscriber whose unsent output would pass `--max-buffer` (default
//! 1 MiB) is disconnected at once and not counted: nobody waits for it,
//! and it costs the server at most `--max-buffer`. (The library then
//! gives it the drain timeout, 5 s, to read what it was owed.)
//!
//! Built-in topics: `$tick` gets `MSG $tick <n>` every `--tick-ms`
//! milliseconds (default 1000; n counts from 1 since the start); `$stdin`
//! gets `MSG $stdin <line>` for each line read on standard input (any
//! bytes; lines over 1 MiB are skipped; at its end the topic goes quiet).
//!
//! # Running it
//!
//! ```text
//! cargo run --release --example pubsub -- /tmp/pubsub.sock --tick-ms 500
//! ```
//!
//! Lines typed into it go to `$stdin`. From other terminals:
//!
//! ```text
//! socat - UNIX-CONNECT:/tmp/pubsub.sock      # then type: SUB news, SUB $tick
//! printf 'PUB news hello\n' | socat - UNIX-CONNECT:/tmp/pubsub.sock
//! python3 -c '
//! import socket; s = socket.socket(socket.AF_UNIX); s.connect("/tmp/pubsub.sock")
//! f = s.makefile("rb"); s.sendall(b"SUB news\nPUB news hi\n")
//! for _ in range(3): print(f.readline().decode(), end="")'
//! ```
//!
//! Usage errors exit 2, a socket that cannot be bound 1. SIGINT or
//! SIGTERM stops it and removes the socket file. `tests/pubsub.rs` runs
//! this program over its socket, its standard input and signals.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use log::{info, warn, LevelFilter};
use uds_reactor::config::parse_size;
use uds_reactor::{
    Closed, Config, ConnId, Context, Ctl, Error, Frame, Framing, Handle, Handler, MessageError,
    SendError, Server,
};

/// The longest topic, in bytes.
pub const MAX_TOPIC: usize = 64;

/// Subscriptions one connection may hold, so that a client cannot grow
/// the topic table without bound.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

/// The longest standard-input line published to `$stdin`.
pub const MAX_STDIN_LINE: usize = 1 << 20;

/// The built-in topics.
const TICK: &[u8] = b"$tick";
const STDIN: &[u8] = b"$stdin";

/// What the program's other threads hand the loop.
#[derive(Debug)]
pub enum Input {
    /// The loop is running: start the `$tick` timer (the first callback
    /// that has a [`Ctl`] to set it with).
    Start,
    /// A line read on standard input, without its `\n`.
    Line(Vec<u8>),
}

/// The broker: the topic table, shared by every connection (the server
/// runs handlers on its one thread, so no lock).
#[derive(Debug)]
pub struct PubSub {
    /// Each topic's subscribers. Invariant: no list is empty; a connection
    /// is listed only under topics its [`Subscriptions`] name, and under
    /// all of them unless it was dropped (then `close` clears the rest).
    topics: HashMap<Vec<u8>, Vec<ConnId>>,
    /// Subscribers disconnected for being too slow whose `close` has not
    /// come yet (they are draining): never counted again.
    dropped: HashSet<ConnId>,
    /// The `MSG` line being fanned out, reused so publishing allocates
    /// nothing once it has grown.
    line: Vec<u8>,
    /// The reply being written (`:<n>`), reused likewise.
    reply: Vec<u8>,
    /// The push limit (`--max-buffer`): a longer `MSG` line never fits.
    max_buffer: usize,
    /// `$tick`'s period, the ticks sent, and when the next one is due.
    tick: Duration,
    ticks: u64,
    next_tick: Option<Instant>,
}

/// Per connection: the topics it subscribes to (the reverse index, so
/// that `close` removes it everywhere).
#[derive(Debug, Default)]
pub struct Subscriptions(Vec<Vec<u8>>);

/// What a command answers, if it succeeds (else a whole `-ERR` line).
enum Reply {
    Ok,
    Count(usize),
}

type Answer = Result<Reply, &'static str>;

/// Where a fan-out goes: a [`Context`] while a frame is handled (so a
/// publisher's own `MSG` goes before its reply), a [`Ctl`] otherwise.
trait Pusher {
    fn push(&mut self, id: ConnId, line: &[u8]) -> Result<(), SendError>;
    fn drop_slow(&mut self, id: ConnId);
}

impl Pusher for Context<'_> {
    fn push(&mut self, id: ConnId, line: &[u8]) -> Result<(), SendError> {
        self.send_to(id, line)
    }
    fn drop_slow(&mut self, id: ConnId) {
        let _ = self.disconnect(id); // Closed is fine: gone already
    }
}

impl Pusher for Ctl<'_> {
    fn push(&mut self, id: ConnId, line: &[u8]) -> Result<(), SendError> {
        self.send_to(id, line)
    }
    fn drop_slow(&mut self, id: ConnId) {
        let _ = self.disconnect(id); // likewise
    }
}

impl PubSub {
    /// A broker with no topics; `$tick` every `tick` once started.
    pub fn new(max_buffer: usize, tick: Duration) -> PubSub {
        PubSub {
            topics: HashMap::new(),
            dropped: HashSet::new(),
            line: Vec::new(),
            reply: Vec::new(),
            max_buffer,
            tick,
            ticks: 0,
            next_tick: None,
        }
    }

    /// Starts `self.line` as `MSG <topic> `; the caller appends the payload.
    fn begin_line(&mut self, topic: &[u8]) {
        self.line.clear();
        self.line.extend_from_slice(b"MSG ");
        self.line.extend_from_slice(topic);
        self.line.push(b' ');
    }

    /// Queues `self.line` to every subscriber of `topic` and returns how
    /// many took it. One that has no room is disconnected and forgotten.
    fn fan_out(&mut self, topic: &[u8], out: &mut impl Pusher) -> usize {
        let Some(subscribers) = self.topics.get_mut(topic) else {
            return 0;
        };
        let (line, dropped) = (&self.line, &mut self.dropped);
        let mut n = 0;
        subscribers.retain(|&id| {
            if !dropped.is_empty() && dropped.contains(&id) {
                return false; // dropped and draining: it may have room again
            }
            match out.push(id, line) {
                Ok(()) => {
                    n += 1;
                    true
                }
                Err(SendError::Full { pending, .. }) => {
                    info!("{id} dropped: too slow ({pending} bytes unsent)");
                    out.drop_slow(id);
                    dropped.insert(id);
                    false
                }
                // Closed (its `close` tidies up), or cannot be: forget it.
                Err(_) => false,
            }
        });
        if subscribers.is_empty() {
            self.topics.remove(topic);
        }
        n
    }

    /// `SUB <topic>`.
    fn subscribe(&mut self, subs: &mut Subscriptions, args: Option<&[u8]>, id: ConnId) -> Answer {
        let topic = topic(args, "-ERR usage: SUB <topic>")?;
        if subs.0.iter().any(|t| t == topic) {
            return Ok(Reply::Ok);
        }
        if subs.0.len() >= MAX_SUBSCRIPTIONS {
            return Err("-ERR too many subscriptions");
        }
        subs.0.push(topic.to_vec());
        self.topics.entry(topic.to_vec()).or_default().push(id);
        Ok(Reply::Ok)
    }

    /// `UNSUB <topic>`.
    fn unsubscribe(&mut self, subs: &mut Subscriptions, args: Option<&[u8]>, id: ConnId) -> Answer {
        let topic = topic(args, "-ERR usage: UNSUB <topic>")?;
        if let Some(i) = subs.0.iter().position(|t| t == topic) {
            subs.0.swap_remove(i);
            self.forget(topic, id);
        }
        Ok(Reply::Ok)
    }

    /// `PUB <topic> <payload>`.
    fn publish(&mut self, args: Option<&[u8]>, cx: &mut Context<'_>) -> Answer {
        const USAGE: &str = "-ERR usage: PUB <topic> <payload>";
        let Some((topic_arg, Some(payload))) = args.map(split_word) else {
            return Err(USAGE);
        };
        let topic = topic(Some(topic_arg), USAGE)?;
        if topic.starts_with(b"$") {
            return Err("-ERR topics starting with $ are the server's");
        }
        if !self.fits(topic, payload.len()) {
            return Err("-ERR message too large for --max-buffer");
        }
        self.begin_line(topic);
        self.line.extend_from_slice(payload);
        Ok(Reply::Count(self.fan_out(topic, cx)))
    }

    /// Whether a `MSG` line with this topic and payload (and its `\n`) can
    /// ever fit a subscriber's output.
    fn fits(&self, topic: &[u8], payload: usize) -> bool {
        b"MSG ".len() + topic.len() + 1 + payload < self.max_buffer
    }

    /// Removes `id` from `topic`'s subscribers.
    fn forget(&mut self, topic: &[u8], id: ConnId) {
        if let Some(list) = self.topics.get_mut(topic) {
            if let Some(i) = list.iter().position(|&s| s == id) {
                list.swap_remove(i);
            }
            if list.is_empty() {
                self.topics.remove(topic);
            }
        }
    }

    /// Sends `reply` to the current connection.
    fn answer(&mut self, answer: Answer, cx: &mut Context<'_>) {
        let line: &[u8] = match answer {
            Ok(Reply::Ok) => b"+OK",
            Err(why) => why.as_bytes(),
            Ok(Reply::Count(n)) => {
                self.reply.clear();
                let _ = write!(self.reply, ":{n}"); // a Vec takes any write
                &self.reply
            }
        };
        // A line always encodes (only length frames over 4 GiB cannot).
        let _ = cx.send(line);
    }

    /// Arms the `$tick` timer for its next due time, late ticks skipped.
    fn arm_tick(&mut self, ctl: &mut Ctl<'_>) {
        let now = ctl.now();
        let next = match self.next_tick {
            Some(last) if last + self.tick > now => last + self.tick,
            _ => now + self.tick,
        };
        self.next_tick = Some(next);
        ctl.set_server_timer(next, 0);
    }
}

impl Handler<Input> for PubSub {
    type State = Subscriptions;
    const PEER_CREDENTIALS: bool = false;

    fn open(&mut self, _: &mut Context<'_>) -> Subscriptions {
        Subscriptions::default()
    }

    fn frame(&mut self, subs: &mut Subscriptions, frame: Frame<'_>, cx: &mut Context<'_>) {
        let (command, args) = split_word(frame.payload());
        let is = |name: &[u8]| command.eq_ignore_ascii_case(name);
        let reply = if is(b"SUB") {
            self.subscribe(subs, args, cx.id())
        } else if is(b"UNSUB") {
            self.unsubscribe(subs, args, cx.id())
        } else if is(b"PUB") {
            self.publish(args, cx)
        } else {
            Err("-ERR unknown command (SUB, UNSUB, PUB)")
        };
        self.answer(reply, cx);
    }

    fn close(&mut self, subs: Subscriptions, closed: Closed, _: &mut Ctl<'_>) {
        for topic in &subs.0 {
            self.forget(topic, closed.id);
        }
        self.dropped.remove(&closed.id);
    }

    fn message(&mut self, input: Input, ctl: &mut Ctl<'_>) {
        match input {
            Input::Start => self.arm_tick(ctl),
            Input::Line(line) => {
                if !self.fits(STDIN, line.len()) {
                    warn!(
                        "stdin line of {} bytes skipped: over --max-buffer",
                        line.len()
                    );
                    return;
                }
                self.begin_line(STDIN);
                self.line.extend_from_slice(&line);
                self.fan_out(STDIN, ctl);
            }
        }
    }

    fn server_timer(&mut self, _: u64, ctl: &mut Ctl<'_>) {
        self.ticks += 1;
        self.begin_line(TICK);
        let _ = write!(self.line, "{}", self.ticks); // a Vec takes any write
        self.fan_out(TICK, ctl);
        self.arm_tick(ctl);
    }
}

/// Splits at the first space: the word before it, and what follows (if a
/// space was there at all).
fn split_word(bytes: &[u8]) -> (&[u8], Option<&[u8]>) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
        None => (bytes, None),
    }
}

/// A lone topic argument: 1 to [`MAX_TOPIC`] bytes, no spaces; `usage`
/// when there is none.
fn topic<'a>(args: Option<&'a [u8]>, usage: &'static str) -> Result<&'a [u8], &'static str> {
    match args {
        None => Err(usage),
        Some([]) => Err("-ERR empty topic"),
        Some(t) if t.len() > MAX_TOPIC => Err("-ERR topic longer than 64 bytes"),
        Some(t) if t.contains(&b' ') => Err("-ERR a topic has no spaces"),
        Some(t) => Ok(t),
    }
}

/// Reads standard input line by line and hands each line to the loop,
/// until the input ends (or the server stops).
fn read_stdin(handle: Handle<Input>) {
    let mut input = std::io::stdin().lock();
    loop {
        let mut line = Vec::new();
        let limit = MAX_STDIN_LINE as u64 + 1;
        match (&mut input).take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                warn!("reading stdin: {e}");
                return;
            }
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        } else if line.len() > MAX_STDIN_LINE {
            warn!("stdin line over {MAX_STDIN_LINE} bytes skipped");
            if input.skip_until(b'\n').is_err() {
                return;
            }
            continue;
        }
        if !deliver(&handle, Input::Line(line)) {
            return;
        }
    }
}

/// Hands `input` to the loop, waiting while its queue is full (so memory
/// stays bounded however fast the input comes); false once it stopped.
fn deliver(handle: &Handle<Input>, mut input: Input) -> bool {
    loop {
        match handle.send(input) {
            Ok(()) => return true,
            Err(MessageError::Full(back)) => {
                input = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(MessageError::Stopped(_)) => return false,
        }
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "pubsub", about = "A publish/subscribe broker on a Unix socket")]
struct Args {
    /// Path of the socket to serve (`@name` for an abstract one).
    path: OsString,
    /// A subscriber whose unsent output would pass this is dropped
    /// (bytes, or with K, M or G).
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    max_buffer: usize,
    /// Period of the `$tick` topic, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    tick_ms: u64,
}

/// Binds, starts the `$tick` timer and the stdin reader, serves.
fn serve(args: Args) -> Result<(), Error> {
    let mut config = Config::new(&args.path);
    config.framing = Framing::Line;
    config.max_buffer = args.max_buffer;
    let tick = Duration::from_millis(args.tick_ms);
    let mut server = Server::with_handler(config, PubSub::new(args.max_buffer, tick))?;
    server.handle_signals()?;
    let handle = server.handle();
    // Taken on the loop's first turn: the queue is empty, so it fits.
    if let Err(e) = handle.send(Input::Start) {
        warn!("cannot start $tick: {e}");
    }
    let reader = std::thread::Builder::new().name("stdin".into());
    if let Err(e) = reader.spawn(move || read_stdin(handle)) {
        warn!("cannot read stdin: {e}");
    }
    // Logs "listening on PATH (stream, line)" once the socket is ready.
    server.run().map(|_| ())
}

fn main() -> ExitCode {
    // Usage errors: clap prints them and exits with status 2.
    let args = Args::parse();
    let _ = simplelog::WriteLogger::init(
        LevelFilter::Info,
        simplelog::Config::default(),
        std::io::stderr(),
    );
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pubsub: {e}");
            // Exit statuses are this program's policy: 2 for bad settings.
            match e {
                Error::Config(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
