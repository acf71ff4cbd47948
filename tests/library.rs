//! The crate as a library: a `Server` run on a thread, echoing; stopped
//! from another thread through its `Handle`; counters read live and
//! returned at the end; the socket file removed; typed setup errors;
//! handlers see their peer's credentials; the operations counters.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, echo_through, exists, our_ids, pattern, Library, TempDir, PATIENCE};
use uds_reactor::{
    CloseReason, Closed, Config, ConnId, Context, Ctl, Echo, Error, Frame, Framing, Handle,
    Handler, PeerCred, SendError, Server, Stats,
};

/// `Handle` crosses threads and is cloned freely.
const _: () = {
    const fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
    send_sync_clone::<Handle>();
    const fn send<T: Send>() {}
    send::<Stats>();
    send::<Error>();
};

/// Polls `handle.stats()` until `done` holds; the counters are published
/// once per loop turn.
fn wait_stats(handle: &Handle, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = handle.stats();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "counters never got there: {s:?}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn echo_on_a_thread_stopped_through_the_handle() {
    let dir = TempDir::new("lib-echo");
    let path = dir.path("s.sock");
    let server = Server::bind(Config::new(&path)).expect("bind");
    assert!(exists(&path), "bind creates the file before run");
    let handle = server.handle();
    let thread = thread::spawn(move || server.run());

    let data = pattern(9, 3 << 20);
    let mut total = 0u64;
    for i in 0..4u64 {
        let len = data.len() >> i;
        let got = echo_through(&path, &data[..len]);
        assert!(got[..] == data[..len], "connection {i}: echo differs");
        total += len as u64;
    }

    let live = wait_stats(&handle, |s| s.closed == 4);
    assert_eq!(live.accepted, 4);
    assert_eq!(live.open, 0);
    assert_eq!(live.bytes_in, total);
    assert_eq!(live.bytes_out, total);
    // Raw framing: each read is one frame, echoed as one.
    assert!(live.frames_in >= 4 && live.frames_in <= total, "{live:?}");
    assert_eq!(live.frames_out, live.frames_in);

    // Stopped from yet another thread, through a clone.
    let remote = handle.clone();
    thread::spawn(move || remote.stop()).join().unwrap();
    let last = thread.join().expect("server thread").expect("run");
    assert_eq!(last, live, "nothing happened after the last snapshot");
    assert_eq!(handle.stats(), last, "the final counters are published");
    assert!(!exists(&path), "socket file left behind");
    // Stopping a stopped server is harmless.
    handle.stop();
}

/// What [`Count`] saw, shared with the test: the calls in order.
#[derive(Debug, Default, PartialEq)]
struct Calls {
    opened: Vec<ConnId>,
    /// Id, peer and the lines it sent, for each `close`.
    closed: Vec<(ConnId, Option<PeerCred>, u64)>,
    /// Why each closed.
    reasons: Vec<CloseReason>,
}

/// Answers each line with its length and records `open`/`close`; closes
/// on "bye".
#[derive(Default)]
struct Count {
    calls: Arc<Mutex<Calls>>,
}

impl Handler for Count {
    type State = u64;

    fn open(&mut self, cx: &mut Context<'_>) -> u64 {
        self.calls.lock().unwrap().opened.push(cx.id());
        0 // lines seen
    }

    fn frame(&mut self, lines: &mut u64, frame: Frame<'_>, cx: &mut Context<'_>) {
        *lines += 1;
        if frame.payload() == b"bye" {
            cx.send(b"ciao").expect("a short reply fits");
            cx.close();
            return;
        }
        cx.send(frame.payload().len().to_string().as_bytes())
            .expect("a short reply fits");
    }

    fn close(&mut self, lines: u64, closed: Closed, _: &mut Ctl<'_>) {
        let mut calls = self.calls.lock().unwrap();
        calls.closed.push((closed.id, closed.peer, lines));
        calls.reasons.push(closed.reason);
    }
}

#[test]
fn custom_handler_counts_frames() {
    let dir = TempDir::new("lib-handler");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.framing = Framing::Line;
    let count = Count::default();
    let calls = Arc::clone(&count.calls);
    let server = Library::start(config, count);
    let handle = server.handle();

    let s = connect(&path);
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    // Ten lines, written in awkward pieces.
    let text = b"a\nbb\nccc\n\ndddd\ne\nff\nggg\nhhhh\nbye\n";
    for piece in text.chunks(3) {
        w.write_all(piece).unwrap();
    }
    let mut replies = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        replies.push(line);
    }
    assert_eq!(
        replies,
        ["1\n", "2\n", "3\n", "0\n", "4\n", "1\n", "2\n", "3\n", "4\n", "ciao\n"]
    );
    let stats = wait_stats(&handle, |s| s.closed == 1);
    assert_eq!(stats.frames_in, 10);
    assert_eq!(stats.frames_out, 10);
    assert_eq!(stats.bytes_in, text.len() as u64);
    assert_eq!(stats.bytes_out, 2 * 9 + 5);
    // One open, then one close with the state it built (ten lines) and
    // the peer's credentials, before the counters said it closed.
    let (pid, uid, gid) = (std::process::id() as i32, our_ids().0, our_ids().1);
    let peer = Some(PeerCred { pid, uid, gid });
    {
        let calls = calls.lock().unwrap();
        let first = calls.opened[0];
        assert_eq!(
            *calls,
            Calls {
                opened: vec![first],
                closed: vec![(first, peer, 10)],
                reasons: vec![CloseReason::Handler],
            }
        );
        assert_eq!((first.slot(), first.serial()), (0, 1));
    }
    // A second connection, cut short by the client: closed all the same.
    let s = connect(&path);
    wait_stats(&handle, |s| s.accepted == 2);
    drop(s);
    wait_stats(&handle, |s| s.closed == 2);
    let last = server.stop();
    assert_eq!(last.frames_in, 10);
    assert!(!exists(&path));
    let calls = calls.lock().unwrap();
    assert_eq!(calls.opened.len(), 2, "{calls:?}");
    assert_eq!(calls.closed.len(), 2, "{calls:?}");
    assert_eq!(calls.closed[1].2, 0, "the second sent no line");
    let second = calls.opened[1];
    assert_eq!(
        (second.slot(), second.serial()),
        (0, 2),
        "the slot is reused, the id is not"
    );
    assert_ne!(second, calls.opened[0]);
    assert_eq!(calls.reasons[1], CloseReason::Eof);
}

#[test]
fn stop_flushes_owed_output_then_returns() {
    let dir = TempDir::new("lib-drain");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.drain_timeout = Duration::from_secs(60);
    let server = Library::start(config, Echo);
    let handle = server.handle();

    // A peer owed 200 KB it has not read yet.
    let mut owed = connect(&path);
    let data = pattern(3, 200_000);
    owed.write_all(&data).unwrap();
    wait_stats(&handle, |s| s.bytes_in == data.len() as u64);
    // An idle peer.
    let mut idle = connect(&path);
    wait_stats(&handle, |s| s.accepted == 2);

    let started = Instant::now();
    handle.stop();
    let mut got = Vec::new();
    owed.read_to_end(&mut got).unwrap();
    assert!(got == data, "owed output lost at stop");
    let mut b = [0; 1];
    assert_eq!(idle.read(&mut b).unwrap(), 0, "idle peer not closed");
    let last = server.stop(); // stopping again is harmless: this joins
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "run waited for the drain timeout"
    );
    assert_eq!(last.bytes_out, data.len() as u64);
    assert_eq!(last.closed, 2);
    assert!(!exists(&path));
}

#[test]
fn stop_before_run_returns_at_once() {
    let dir = TempDir::new("lib-early");
    let path = dir.path("s.sock");
    let server = Server::bind(Config::new(&path)).unwrap();
    let handle = server.handle();
    handle.stop();
    let started = Instant::now();
    let stats = thread::spawn(move || server.run()).join().unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(stats, Stats::default());
    assert!(!exists(&path));
}

#[test]
fn setup_errors_are_typed() {
    let dir = TempDir::new("lib-errors");
    let path = dir.path("s.sock");
    let first = Server::bind(Config::new(&path)).unwrap();
    match Server::bind(Config::new(&path)) {
        Err(e @ Error::InUse(_)) => {
            assert!(e.to_string().contains(&*path.to_string_lossy()), "{e}");
        }
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("two servers bound one path"),
    }
    drop(first); // never run: the file stays (nobody listens now)

    let file = dir.path("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(
        Server::bind(Config::new(&file)),
        Err(Error::NotSocket(_))
    ));
    assert!(matches!(
        Server::bind(Config::new(dir.path("none").join("s.sock"))),
        Err(Error::NoParent(_))
    ));
    assert!(matches!(
        Server::bind(Config::new(dir.path(&"x".repeat(120)))),
        Err(Error::PathTooLong(_))
    ));
    let mut bad = Config::new(dir.path("bad.sock"));
    bad.max_buffer = 0;
    match Server::bind(bad) {
        Err(Error::Config(msg)) => assert!(msg.contains("--max-buffer"), "{msg}"),
        Err(e) => panic!("expected Config, got {e}"),
        Ok(_) => panic!("accepted --max-buffer 0"),
    }
    assert!(!exists(&dir.path("bad.sock")));

    // The stale file `first` left is replaced by the next server.
    let server = Library::start(Config::new(&path), Echo);
    let mut s = connect(&path);
    s.write_all(b"ok").unwrap();
    let mut b = [0; 2];
    s.read_exact(&mut b).unwrap();
    server.stop();
}

/// Replies to each line with the peer's credentials as the handler sees
/// them (`Context::peer`).
struct WhoAmI;

impl Handler for WhoAmI {
    type State = ();

    fn open(&mut self, _: &mut Context<'_>) {}

    fn frame(&mut self, _: &mut (), _: Frame<'_>, cx: &mut Context<'_>) {
        let reply = match cx.peer() {
            Some(p) => format!("pid={} uid={} gid={}", p.pid, p.uid, p.gid),
            None => "unknown".into(),
        };
        // Line framing: `send` adds the `\n`.
        cx.send(reply.as_bytes()).expect("a short reply fits");
    }
}

#[test]
fn handlers_see_the_peer_credentials() {
    let dir = TempDir::new("lib-peer");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.framing = Framing::Line;
    let server = Library::start(config, WhoAmI);

    let mut s = connect(&path);
    s.write_all(b"who am i?\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let (uid, gid) = our_ids();
    let want = format!("pid={} uid={uid} gid={gid}\n", std::process::id());
    assert_eq!(line, want);
    server.stop();
}

/// Greets each peer with what `open` learns of it: the pid its pidfd
/// names (`SO_PEERPIDFD`, from `/proc/self/fdinfo`) and its groups.
struct Identity;

impl Handler for Identity {
    type State = ();

    fn open(&mut self, cx: &mut Context<'_>) {
        use std::os::fd::AsRawFd;
        let pid = cx.peer_pidfd().map(|fd| {
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()));
            let info = info.unwrap_or_default();
            let line = info.lines().find(|l| l.starts_with("Pid:")).unwrap_or("");
            line.trim_start_matches("Pid:").trim().to_owned()
        });
        let groups = cx.peer_groups().map(|g| g.len());
        let greeting = format!("pidfd-pid={pid:?} groups={groups:?}");
        cx.send(greeting.as_bytes()).expect("fits");
    }

    fn frame(&mut self, _: &mut (), _: Frame<'_>, cx: &mut Context<'_>) {
        // Outside `open` the socket is not at hand.
        let late = (cx.peer_pidfd().is_none(), cx.peer_groups().is_none());
        cx.send(format!("later={late:?}").as_bytes()).expect("fits");
    }
}

/// `open` can get a pidfd of the peer (race-free against pid reuse) and
/// its supplementary groups; where the kernel has no SO_PEERPIDFD (before
/// 6.5) the pidfd is a clean `None`.
#[test]
fn open_sees_the_peer_pidfd_and_groups() {
    let dir = TempDir::new("lib-identity");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.framing = Framing::Line;
    let server = Library::start(config, Identity);
    let mut s = connect(&path);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let ours = status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map_or(0, |g| g.split_whitespace().count());
    let pidfd = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .and_then(|r| {
            let mut v = r
                .trim()
                .split(['.', '-'])
                .map(|n| n.parse::<u32>().unwrap_or(0));
            Some((v.next()?, v.next()?))
        })
        .is_some_and(|v| v >= (6, 5));
    let pid = match pidfd {
        true => format!("Some(\"{}\")", std::process::id()),
        false => "None".into(),
    };
    assert_eq!(line, format!("pidfd-pid={pid} groups=Some({ours})\n"));
    s.write_all(b"again\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "later=(true, true)\n");
    server.stop();
}

/// The operations counters (over the limit, refused credentials, closed
/// idle) are in the library's `Stats` as in the SIGUSR1 line.
#[test]
fn operations_counters_reach_the_library() {
    let dir = TempDir::new("lib-ops");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.max_connections = Some(1);
    config.idle_timeout = Some(Duration::from_secs(1));
    let server = Library::start(config, Echo);
    let handle = server.handle();

    let mut held = connect(&path);
    held.write_all(b"in").unwrap();
    let mut b = [0; 2];
    held.read_exact(&mut b).unwrap();
    let mut surplus = connect(&path);
    assert_eq!(surplus.read(&mut b).unwrap(), 0, "surplus not closed");
    // The held one goes quiet and is closed by the idle timeout.
    assert_eq!(held.read(&mut b).unwrap(), 0, "idle peer not closed");
    let stats = wait_stats(&handle, |s| s.closed_idle == 1);
    assert_eq!((stats.accepted, stats.rejected), (1, 1), "{stats:?}");
    server.stop();

    let mut config = Config::new(&path);
    config.allow_uids = vec![12345];
    let server = Library::start(config, Echo);
    let handle = server.handle();
    let mut stranger = connect(&path);
    assert_eq!(stranger.read(&mut b).unwrap(), 0, "stranger not closed");
    let stats = wait_stats(&handle, |s| s.rejected_cred == 1);
    assert_eq!(stats.accepted, 0, "{stats:?}");
    server.stop();
}

/// Replies to `big` with a payload no length field can carry, and says
/// what `send` answered; echoes anything else.
struct Oversize;

impl Handler for Oversize {
    type State = ();

    fn open(&mut self, _: &mut Context<'_>) {}

    fn frame(&mut self, _: &mut (), frame: Frame<'_>, cx: &mut Context<'_>) {
        if frame.payload() != b"big" {
            cx.send(frame.payload()).expect("a short reply fits");
            return;
        }
        // Zeroed pages are mapped lazily: 4 GiB of address space, no memory.
        let big = vec![0u8; u32::MAX as usize + 1];
        let answer = match cx.send(&big) {
            Err(SendError::TooLarge { len, max }) => format!("refused {len} > {max}"),
            Err(e) => format!("other error {e}"),
            Ok(()) => "queued".into(),
        };
        assert_eq!(cx.pending(), 0, "nothing of it was queued");
        cx.send(answer.as_bytes()).expect("a short reply fits");
    }
}

/// A reply that cannot be framed is an error value the handler sees; the
/// connection carries on (it used to be closed without a word).
#[test]
fn an_unframable_reply_is_an_error_value() {
    let dir = TempDir::new("lib-oversize");
    let path = dir.path("s.sock");
    let mut config = Config::new(&path);
    config.framing = Framing::Length;
    let server = Library::start(config, Oversize);
    let mut s = connect(&path);
    let mut ask = |payload: &[u8]| -> Vec<u8> {
        let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(payload);
        s.write_all(&frame).unwrap();
        let mut head = [0; 4];
        s.read_exact(&mut head).unwrap();
        let mut reply = vec![0; u32::from_be_bytes(head) as usize];
        s.read_exact(&mut reply).unwrap();
        reply
    };
    assert_eq!(ask(b"big"), b"refused 4294967296 > 4294967295");
    assert_eq!(ask(b"still here"), b"still here");
    let last = server.stop();
    assert_eq!(last.closed, 1);
    assert_eq!(last.frames_out, 2, "the refused reply is not counted");
}
