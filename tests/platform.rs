//! The handler as a platform, over real sockets with the library server
//! on a thread: pushes to other connections by id (stale ids reach
//! nobody), disconnecting others, per-connection and server timers
//! (cancelled ones and those of closed connections never fire), messages
//! from other threads through the handle (bounded), flow control (`Full`,
//! then `drained`), close reasons, the handler given back after `run`,
//! and datagrams sent to any address.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{connect, TempDir, PATIENCE};
use uds_reactor::{
    CloseReason, Closed, Config, ConnId, Context, Ctl, Error, Frame, Framing, Handle, Handler,
    MessageError, SendError, Server, SocketType, Stats, TimerId,
};

/// A server on its own thread that gives its handler back.
struct Running<H, M> {
    handle: Handle<M>,
    thread: JoinHandle<(Result<Stats, Error>, H)>,
}

fn start<H, M>(config: Config, handler: H) -> Running<H, M>
where
    H: Handler<M> + Send + 'static,
    H::State: Send,
    M: Send + 'static,
{
    let server = Server::with_handler(config, handler).expect("bind");
    let handle = server.handle();
    let thread = thread::spawn(move || server.run_handler());
    Running { handle, thread }
}

impl<H, M> Running<H, M> {
    /// Stops the server and gives the handler back.
    fn stop(self) -> H {
        self.finish().1
    }

    /// Stops the server: its final counters, and the handler.
    fn finish(self) -> (Stats, H) {
        self.handle.stop();
        let (stats, handler) = self.thread.join().expect("server thread");
        (stats.expect("run"), handler)
    }
}

fn line_config(path: &Path) -> Config {
    let mut config = Config::new(path);
    config.framing = Framing::Line;
    config
}

fn read_line(r: &mut BufReader<UnixStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read a line");
    line
}

fn reader(s: &UnixStream) -> BufReader<UnixStream> {
    BufReader::new(s.try_clone().expect("clone"))
}

/// A chat room: every line goes to every other member; `kick` closes the
/// others. It never forgets an id, so after a member leaves, pushes to it
/// report `Closed` (the reply says how many did).
#[derive(Default)]
struct Room {
    members: Vec<ConnId>,
    closes: Vec<(ConnId, CloseReason)>,
}

impl Handler for Room {
    type State = ();

    fn open(&mut self, cx: &mut Context<'_>) {
        self.members.push(cx.id());
        let _ = cx.send(b"welcome");
    }

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        let me = cx.id();
        let (mut sent, mut closed) = (0, 0);
        for &m in self.members.iter().filter(|&&m| m != me) {
            let r = if frame.payload() == b"kick" {
                cx.disconnect(m)
            } else {
                cx.send_to(m, frame.payload())
            };
            match r {
                Ok(()) => sent += 1,
                Err(SendError::Closed) => closed += 1,
                Err(e) => panic!("{e}"),
            }
        }
        let _ = cx.send(format!("sent {sent} closed {closed}").as_bytes());
    }

    fn close(&mut self, _: (), closed: Closed, ctl: &mut Ctl<'_>) {
        assert!(!ctl.is_open(closed.id), "close comes after the end");
        self.closes.push((closed.id, closed.reason));
    }
}

#[test]
fn pushes_reach_open_connections_only_and_stale_ids_nobody() {
    let dir = TempDir::new("platform-push");
    let path = dir.path("s.sock");
    let running = start(line_config(&path), Room::default());
    let (a, b, c) = (connect(&path), connect(&path), connect(&path));
    let (mut ra, mut rb, mut rc) = (reader(&a), reader(&b), reader(&c));
    for r in [&mut ra, &mut rb, &mut rc] {
        assert_eq!(read_line(r), "welcome\n");
    }
    (&a).write_all(b"hello\n").unwrap();
    assert_eq!(read_line(&mut ra), "sent 2 closed 0\n");
    assert_eq!(read_line(&mut rb), "hello\n");
    assert_eq!(read_line(&mut rc), "hello\n");
    // B leaves; D arrives, most likely in B's slot: B's id must not
    // reach D, which gets exactly one copy (its own id's).
    drop((b, rb));
    let d = connect(&path);
    let mut rd = reader(&d);
    assert_eq!(read_line(&mut rd), "welcome\n");
    (&a).write_all(b"again\n").unwrap();
    assert_eq!(read_line(&mut ra), "sent 2 closed 1\n");
    assert_eq!(read_line(&mut rc), "again\n");
    assert_eq!(read_line(&mut rd), "again\n");
    // Kick: C and D are closed by A's word, A stays.
    (&a).write_all(b"kick\n").unwrap();
    assert_eq!(read_line(&mut ra), "sent 2 closed 1\n");
    assert_eq!(read_line(&mut rc), "", "C was disconnected");
    assert_eq!(read_line(&mut rd), "", "D was disconnected");
    (&a).write_all(b"alone\n").unwrap();
    assert_eq!(read_line(&mut ra), "sent 0 closed 3\n");
    drop((a, ra));
    let deadline = Instant::now() + PATIENCE;
    while running.handle.stats().closed < 4 {
        assert!(Instant::now() < deadline, "A's hang-up never seen");
        thread::sleep(Duration::from_millis(2));
    }
    let room = running.stop();
    let reasons: Vec<CloseReason> = room.closes.iter().map(|&(_, r)| r).collect();
    assert_eq!(room.closes.len(), 4, "{:?}", room.closes);
    assert_eq!(reasons[0], CloseReason::Eof, "B hung up");
    assert_eq!(reasons[1..3], [CloseReason::Handler; 2], "C and D kicked");
    assert_eq!(reasons[3], CloseReason::Eof, "A hung up");
    let ids: Vec<ConnId> = room.closes.iter().map(|&(id, _)| id).collect();
    assert_eq!(ids[0], room.members[1], "B's own id, closed once");
}

/// Timers: each connection sets two and cancels the first; a server timer
/// counts connection timers that fired for closed connections (none may).
#[derive(Default)]
struct Clock {
    fired: Vec<(ConnId, u64)>,
    /// Who asked for the server timer: told when it fires.
    asked: Option<ConnId>,
}

impl Handler for Clock {
    type State = Option<TimerId>;

    fn open(&mut self, cx: &mut Context<'_>) -> Option<TimerId> {
        let now = cx.now();
        let first = cx.set_timer(now + Duration::from_millis(20), 1);
        cx.set_timer(now + Duration::from_millis(40), 2);
        Some(first)
    }

    fn frame(&mut self, first: &mut Option<TimerId>, frame: Frame<'_>, cx: &mut Context<'_>) {
        match frame.payload() {
            b"cancel" => {
                let was_set = first.take().is_some_and(|t| cx.cancel_timer(t));
                let _ = cx.send(format!("cancelled {was_set}").as_bytes());
            }
            b"server" => {
                let at = cx.now() + Duration::from_millis(30);
                cx.set_server_timer(at, 9);
                self.asked = Some(cx.id());
                let _ = cx.send(b"set");
            }
            _ => {}
        }
    }

    fn timer(&mut self, _: &mut Option<TimerId>, token: u64, cx: &mut Context<'_>) {
        self.fired.push((cx.id(), token));
        let _ = cx.send(format!("tick {token}").as_bytes());
    }

    fn server_timer(&mut self, token: u64, ctl: &mut Ctl<'_>) {
        let asked = self.asked.expect("set by a frame");
        let _ = ctl.send_to(asked, format!("server {token}").as_bytes());
    }
}

#[test]
fn timers_fire_in_order_and_never_after_cancel_or_close() {
    let dir = TempDir::new("platform-timers");
    let path = dir.path("s.sock");
    let running = start(line_config(&path), Clock::default());
    // One connection cancels its first timer at once: only tick 2 comes.
    let a = connect(&path);
    (&a).write_all(b"cancel\n").unwrap();
    let mut ra = reader(&a);
    assert_eq!(read_line(&mut ra), "cancelled true\n");
    assert_eq!(read_line(&mut ra), "tick 2\n");
    // Cancelling again: it is gone.
    (&a).write_all(b"cancel\n").unwrap();
    assert_eq!(read_line(&mut ra), "cancelled false\n");
    // Many connections that close before their timers come due.
    for _ in 0..200 {
        drop(connect(&path));
    }
    // One that keeps both: tick 1 then tick 2.
    let b = connect(&path);
    let mut rb = reader(&b);
    assert_eq!(read_line(&mut rb), "tick 1\n");
    assert_eq!(read_line(&mut rb), "tick 2\n");
    // A server timer due after every deadline of the 200 (set when they
    // opened, before b did): once it fired, theirs were due long ago.
    (&b).write_all(b"server\n").unwrap();
    assert_eq!(read_line(&mut rb), "set\n");
    assert_eq!(read_line(&mut rb), "server 9\n");
    assert_eq!(running.handle.stats().closed, 200, "the 200 had closed");
    drop((a, ra, b, rb));
    let clock = running.stop();
    let fired_ids: std::collections::HashSet<ConnId> =
        clock.fired.iter().map(|&(id, _)| id).collect();
    assert_eq!(
        fired_ids.len(),
        2,
        "only the two open connections' timers fired"
    );
    assert_eq!(clock.fired.len(), 3, "{:?}", clock.fired);
}

/// Broadcasts what other threads send to every connection.
#[derive(Default)]
struct Announcer {
    members: Vec<ConnId>,
    got: Vec<String>,
}

impl Handler<String> for Announcer {
    type State = ();

    fn open(&mut self, cx: &mut Context<'_>) {
        self.members.push(cx.id());
        let _ = cx.send(b"ready");
    }

    fn frame(&mut self, _: &mut (), _: Frame<'_>, _: &mut Context<'_>) {}

    fn close(&mut self, _: (), closed: Closed, _: &mut Ctl<'_>) {
        self.members.retain(|&m| m != closed.id);
    }

    fn message(&mut self, text: String, ctl: &mut Ctl<'_>) {
        for &m in &self.members {
            ctl.send_to(m, text.as_bytes()).expect("room for a line");
        }
        self.got.push(text);
    }
}

#[test]
fn messages_from_other_threads_reach_the_loop_in_order_and_the_queue_is_bounded() {
    let dir = TempDir::new("platform-messages");
    let path = dir.path("s.sock");
    let mut config = line_config(&path);
    config.message_queue = 4;
    let server = Server::with_handler(config, Announcer::default()).expect("bind");
    let handle = server.handle();
    // Not running yet: the queue fills, and a full queue says so.
    for i in 0..4 {
        handle.send(format!("early {i}")).expect("room");
    }
    match handle.send("one too many".to_string()) {
        Err(MessageError::Full(m)) => assert_eq!(m, "one too many"),
        other => panic!("expected Full, got {other:?}"),
    }
    let thread = thread::spawn(move || server.run_handler());
    let s = connect(&path);
    let mut r = reader(&s);
    assert_eq!(read_line(&mut r), "ready\n");
    // From several threads at once; each thread's messages keep order.
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let handle = handle.clone();
            thread::spawn(move || {
                for i in 0..50 {
                    let mut m = format!("t{t} {i}");
                    loop {
                        match handle.send(m) {
                            Ok(()) => break,
                            Err(MessageError::Full(back)) => {
                                m = back;
                                thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.join().unwrap();
    }
    let mut next = [0; 3];
    let mut seen = 0;
    while seen < 150 {
        let line = read_line(&mut r);
        if line.starts_with("early ") {
            continue; // sent before we connected; we may or may not see them
        }
        seen += 1;
        let (t, i) = line.trim_end().split_once(' ').expect("t<n> <i>");
        let t: usize = t[1..].parse().unwrap();
        assert_eq!(i.parse::<usize>().unwrap(), next[t], "thread {t} in order");
        next[t] += 1;
    }
    handle.stop();
    let (stats, announcer) = thread.join().unwrap();
    stats.expect("run");
    assert_eq!(announcer.got.len(), 154, "the early ones too");
    assert_eq!(announcer.got[0], "early 0");
    match handle.send("late".into()) {
        Err(MessageError::Stopped(m)) => assert_eq!(m, "late"),
        other => panic!("expected Stopped, got {other:?}"),
    }
}

/// `flood N` pushes N 1 KiB lines to the other connection (`self N`: to
/// the sender itself); counts the `Full` refusals; `drained` tells the
/// slow one it may read on.
#[derive(Default)]
struct Flood {
    members: Vec<ConnId>,
    refused: u64,
    drained: u64,
}

impl Handler for Flood {
    type State = ();

    fn open(&mut self, cx: &mut Context<'_>) {
        self.members.push(cx.id());
    }

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        let (_, n) = frame
            .payload()
            .split_at(1 + frame.payload().iter().position(|&b| b == b' ').unwrap());
        let n: usize = std::str::from_utf8(n).unwrap().parse().unwrap();
        let me = cx.id();
        let other = match frame.payload().starts_with(b"self ") {
            true => me,
            false => *self.members.iter().find(|&&m| m != me).expect("two"),
        };
        let line = vec![b'x'; 1023];
        let mut queued = 0;
        for _ in 0..n {
            match cx.send_to(other, &line) {
                Ok(()) => queued += 1,
                Err(SendError::Full { limit, .. }) => {
                    assert_eq!(limit, 64 << 10);
                    self.refused += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let pending = cx.pending_of(other).expect("open");
        assert!(pending <= 64 << 10, "a push never goes past the limit");
        let _ = cx.send(format!("queued {queued}").as_bytes());
    }

    fn drained(&mut self, _: &mut (), cx: &mut Context<'_>) {
        self.drained += 1;
        let _ = cx.send(b"drained");
    }
}

#[test]
fn a_push_over_the_limit_is_refused_and_drained_follows() {
    let dir = TempDir::new("platform-flow");
    let path = dir.path("s.sock");
    let mut config = line_config(&path);
    config.max_buffer = 64 << 10;
    let running = start(config, Flood::default());
    let publisher = connect(&path);
    let slow = connect(&path);
    let deadline = Instant::now() + PATIENCE;
    while running.handle.stats().accepted < 2 {
        assert!(Instant::now() < deadline);
        thread::sleep(Duration::from_millis(2));
    }
    let mut rp = reader(&publisher);
    (&publisher).write_all(b"flood 1000\n").unwrap();
    let queued: usize = read_line(&mut rp).trim_end()[7..].parse().unwrap();
    // The kernel takes some (socket buffers), the rest waits under 64 KiB.
    assert!(queued < 1000, "some were refused: {queued}");
    // The slow reader reads: everything queued, then `drained`.
    let mut rs = reader(&slow);
    for i in 0..queued {
        assert_eq!(read_line(&mut rs).len(), 1024, "line {i}");
    }
    assert_eq!(read_line(&mut rs), "drained\n");
    drop((publisher, rp, slow, rs));
    let flood = running.stop();
    assert_eq!(flood.refused, 1000 - queued as u64);
    assert_eq!(flood.drained, 1, "once per refusal streak");
}

/// A connection's pushes to itself obey the same limit, and a refusal
/// brings `drained` the same way (it used to be lost).
#[test]
fn a_push_to_itself_over_the_limit_is_refused_and_drained_follows() {
    let dir = TempDir::new("platform-self");
    let path = dir.path("s.sock");
    let mut config = line_config(&path);
    config.max_buffer = 64 << 10;
    let running = start(config, Flood::default());
    let me = connect(&path);
    let mut r = reader(&me);
    (&me).write_all(b"self 1000\n").unwrap();
    // The replies queued before the count, then the count itself.
    let mut lines = 0;
    let queued: usize = loop {
        let line = read_line(&mut r);
        match line.strip_prefix("queued ") {
            Some(n) => break n.trim_end().parse().unwrap(),
            None => lines += 1,
        }
    };
    assert_eq!(lines, queued, "every accepted push, before the count");
    assert!(queued < 1000, "some were refused: {queued}");
    assert_eq!(read_line(&mut r), "drained\n");
    drop((me, r));
    let flood = running.stop();
    assert_eq!(flood.refused, 1000 - queued as u64);
    assert_eq!(flood.drained, 1, "once per refusal streak");
}

/// Forwards `FWD <path> <text>` to a datagram socket at `<path>`.
struct Forward;

impl Handler for Forward {
    type State = ();

    fn open(&mut self, _: &mut Context<'_>) {}

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        let text = std::str::from_utf8(frame.payload()).unwrap();
        let (to, what) = text[4..].split_once(' ').unwrap();
        let addr = socket2::SockAddr::unix(to).unwrap();
        cx.send_datagram(&addr, what.as_bytes()).expect("queued");
        let _ = cx.send(b"forwarded");
    }
}

#[test]
fn datagrams_go_to_any_address() {
    let dir = TempDir::new("platform-dgram");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.socket_type = SocketType::Dgram;
    let running = start(config, Forward);
    let sender = UnixDatagram::bind(dir.path("sender.sock")).unwrap();
    let other = UnixDatagram::bind(dir.path("other.sock")).unwrap();
    for s in [&sender, &other] {
        s.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    let cmd = format!("FWD {} hi there", dir.path("other.sock").display());
    sender.send_to(cmd.as_bytes(), &path).unwrap();
    let mut buf = [0; 64];
    let n = other.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hi there");
    let n = sender.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"forwarded");
    let (stats, _) = running.finish();
    // Both datagrams sent are frames out, the forwarded one included.
    assert_eq!((stats.frames_in, stats.frames_out), (1, 2));
}

/// On a stream socket a datagram has nowhere to go.
#[test]
fn a_datagram_on_a_stream_socket_is_unsupported() {
    struct Try;
    impl Handler for Try {
        type State = ();
        fn open(&mut self, cx: &mut Context<'_>) {
            let addr = socket2::SockAddr::unix("/nonexistent").unwrap();
            let r = cx.send_datagram(&addr, b"x");
            let _ = cx.send(format!("{r:?}").as_bytes());
        }
        fn frame(&mut self, _: &mut (), _: Frame<'_>, _: &mut Context<'_>) {}
    }
    let dir = TempDir::new("platform-unsupported");
    let path = dir.path("s.sock");
    let running = start(line_config(&path), Try);
    let s = connect(&path);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert_eq!(line, "Err(Unsupported)\n");
    let mut rest = Vec::new();
    drop(s.shutdown(std::net::Shutdown::Write));
    let _ = (&s).read_to_end(&mut rest);
    running.stop();
}

/// A server timer set before `run` fires once the loop runs (and one set
/// for later by its callback keeps the work going).
#[test]
fn a_server_timer_set_before_run_fires() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    struct Ticks(Arc<AtomicU64>);
    impl Handler for Ticks {
        type State = ();
        fn open(&mut self, _: &mut Context<'_>) {}
        fn frame(&mut self, _: &mut (), _: Frame<'_>, _: &mut Context<'_>) {}
        fn server_timer(&mut self, token: u64, ctl: &mut Ctl<'_>) {
            assert_eq!(token, 7);
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                ctl.set_server_timer(ctl.now() + Duration::from_millis(1), 7);
            }
        }
    }

    let dir = TempDir::new("platform-early-timer");
    let ticks = Arc::new(AtomicU64::new(0));
    let mut server =
        Server::with_handler(line_config(&dir.path("s.sock")), Ticks(Arc::clone(&ticks))).unwrap();
    server.set_server_timer(Instant::now(), 7);
    let handle = server.handle();
    let thread = thread::spawn(move || server.run_handler());
    let deadline = Instant::now() + PATIENCE;
    while ticks.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the timers did not fire");
        thread::sleep(Duration::from_millis(1));
    }
    handle.stop();
    let (stats, _) = thread.join().unwrap();
    stats.unwrap();
    assert_eq!(ticks.load(Ordering::SeqCst), 3);
}
