//! The pub/sub example (`examples/pubsub.rs`), run as the real program and
//! talked to over its socket, its standard input and signals: fan-out
//! order and counts, topics, dropping a slow subscriber, `$tick`,
//! `$stdin`, errors, shutdown and exit statuses.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::OnceLock;
use std::time::Instant;

use common::{connect, exists, exit_within, run_to_exit, signal, TempDir, PATIENCE};

/// The example program, built for this test's profile. `cargo test --test
/// pubsub` builds only this test, not the examples, so it builds the
/// example itself (once), lest a stale binary be tested.
fn example() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/pubsub-HASH -> target/<profile>
        let profile = exe.parent().and_then(Path::parent).expect("target dir");
        let cargo = std::env::var_os("CARGO").or_else(|| option_env!("CARGO").map(Into::into));
        if let (Some(cargo), Some(target)) = (cargo, profile.parent()) {
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "--quiet", "--example", "pubsub", "--target-dir"])
                .arg(target)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build --example pubsub");
            assert!(status.success(), "cargo build --example pubsub failed");
        }
        let bin = profile.join("examples").join("pubsub");
        assert!(
            bin.exists(),
            "{} not found: run `cargo build --example pubsub` first",
            bin.display()
        );
        bin
    })
}

/// The example running on a socket in a fresh directory, its stdin a
/// pipe, its stderr collected; killed on drop if still running.
struct Broker {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    path: PathBuf,
    _dir: TempDir,
}

impl Broker {
    /// Starts `pubsub PATH args...` and waits for `listening on`.
    fn start(args: &[&str]) -> Broker {
        let dir = TempDir::new("pubsub");
        let path = dir.path("ps.sock");
        let mut child = Command::new(example())
            .arg(&path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the pubsub example");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        let mut broker = Broker {
            child,
            stdin,
            lines,
            path,
            _dir: dir,
        };
        broker.wait_for("listening on");
        broker
    }

    /// Waits for a stderr line containing `needle`; panics after PATIENCE.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line containing {needle:?}: {e}"),
            }
        }
    }

    fn client(&self) -> Client {
        Client::new(&self.path)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A line client whose reads give up after PATIENCE.
struct Client {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Client {
    fn new(path: &Path) -> Client {
        let w = connect(path);
        let r = BufReader::new(w.try_clone().expect("clone"));
        Client { w, r }
    }

    fn send(&mut self, line: &[u8]) {
        self.w.write_all(line).expect("write");
        self.w.write_all(b"\n").expect("write");
    }

    /// The next line as bytes, without its `\n`; panics on EOF.
    fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line).expect("read a line");
        assert_eq!(line.pop(), Some(b'\n'), "EOF or a cut line: {line:?}");
        line
    }

    fn line(&mut self) -> String {
        String::from_utf8_lossy(&self.raw_line()).into_owned()
    }

    /// Sends one command and reads the next line (its reply, unless a
    /// message to this client comes first).
    fn cmd(&mut self, line: &str) -> String {
        self.send(line.as_bytes());
        self.line()
    }

    /// `SUB topic`, which must succeed.
    fn sub(&mut self, topic: &str) {
        assert_eq!(self.cmd(&format!("SUB {topic}")), "+OK", "SUB {topic}");
    }
}

#[test]
fn every_subscriber_gets_every_message_in_publish_order() {
    let broker = Broker::start(&[]);
    let mut subs: Vec<Client> = (0..3).map(|_| broker.client()).collect();
    for s in &mut subs {
        s.sub("news");
    }
    let (mut p1, mut p2) = (broker.client(), broker.client());
    let mut sent = Vec::new();
    for i in 0..10 {
        for (p, name) in [(&mut p1, "a"), (&mut p2, "b")] {
            let payload = format!("{name}{i} with  spaces");
            assert_eq!(p.cmd(&format!("PUB news {payload}")), ":3");
            sent.push(format!("MSG news {payload}"));
        }
    }
    assert_eq!(p1.cmd("PUB nobody x"), ":0");
    for s in &mut subs {
        let got: Vec<String> = (0..sent.len()).map(|_| s.line()).collect();
        assert_eq!(got, sent);
    }
}

#[test]
fn concurrent_publishers_reach_all_subscribers_in_one_order() {
    const EACH: usize = 200;
    let broker = Broker::start(&[]);
    let mut subs: Vec<Client> = (0..3).map(|_| broker.client()).collect();
    for s in &mut subs {
        s.sub("t");
    }
    let publishers: Vec<_> = (0..3)
        .map(|p| {
            let mut c = broker.client();
            std::thread::spawn(move || {
                // Pipelined: all the PUBs, then all the replies.
                let batch: String = (0..EACH).map(|i| format!("PUB t {p} {i}\n")).collect();
                c.w.write_all(batch.as_bytes()).expect("write");
                (0..EACH).map(|_| c.line()).collect::<Vec<_>>()
            })
        })
        .collect();
    for p in publishers {
        let replies = p.join().expect("publisher");
        assert!(replies.iter().all(|r| r == ":3"), "{replies:?}");
    }
    let first: Vec<String> = (0..3 * EACH).map(|_| subs[0].line()).collect();
    // Each publisher's messages arrive in the order it sent them...
    for p in 0..3 {
        let mine: Vec<&String> = first
            .iter()
            .filter(|m| m.starts_with(&format!("MSG t {p} ")))
            .collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("MSG t {p} {i}")).collect();
        assert_eq!(mine, want.iter().collect::<Vec<_>>());
    }
    // ...and every subscriber sees the same interleaving.
    for s in &mut subs[1..] {
        let got: Vec<String> = (0..3 * EACH).map(|_| s.line()).collect();
        assert_eq!(got, first);
    }
}

#[test]
fn topics_are_isolated_and_unsub_stops_delivery() {
    let broker = Broker::start(&[]);
    let (mut a, mut b, mut p) = (broker.client(), broker.client(), broker.client());
    a.sub("x");
    b.sub("y");
    a.sub("x"); // twice is once
    assert_eq!(p.cmd("PUB x 1"), ":1");
    assert_eq!(p.cmd("PUB y 2"), ":1");
    assert_eq!(p.cmd("PUB x 3"), ":1");
    // Nothing of y's between x's messages, nor the other way round.
    assert_eq!(a.line(), "MSG x 1");
    assert_eq!(a.line(), "MSG x 3");
    assert_eq!(b.line(), "MSG y 2");
    // An empty payload after the topic's space is a message too.
    assert_eq!(p.cmd("PUB y "), ":1");
    assert_eq!(b.line(), "MSG y ");

    assert_eq!(a.cmd("UNSUB x"), "+OK");
    assert_eq!(a.cmd("UNSUB x"), "+OK");
    assert_eq!(a.cmd("UNSUB never"), "+OK");
    assert_eq!(p.cmd("PUB x 4"), ":0");
    // Had "MSG x 4" gone to a, it would be ahead of this reply.
    assert_eq!(a.cmd("SUB z"), "+OK");
    assert_eq!(p.cmd("PUB y 5"), ":1");
    assert_eq!(b.line(), "MSG y 5");
}

#[test]
fn a_subscribed_publisher_gets_its_message_before_the_count() {
    let broker = Broker::start(&[]);
    let (mut a, mut b) = (broker.client(), broker.client());
    a.sub("t");
    b.sub("t");
    assert_eq!(a.cmd("PUB t hi"), "MSG t hi");
    assert_eq!(a.line(), ":2");
    // Pipelined, each MSG still comes right before its own count.
    a.w.write_all(b"PUB t 1\nPUB t 2\n").expect("write");
    let got: Vec<String> = (0..4).map(|_| a.line()).collect();
    assert_eq!(got, ["MSG t 1", ":2", "MSG t 2", ":2"]);
    let got: Vec<String> = (0..3).map(|_| b.line()).collect();
    assert_eq!(got, ["MSG t hi", "MSG t 1", "MSG t 2"]);
}

/// Publishes `PUB topic i` for i = 0, 1, ... until the count is `want`;
/// returns how many were published. Panics after PATIENCE.
fn publish_until(p: &mut Client, topic: &str, want: &str) -> usize {
    let deadline = Instant::now() + PATIENCE;
    for i in 0.. {
        assert!(Instant::now() < deadline, "{topic} never counted {want}");
        if p.cmd(&format!("PUB {topic} {i}")) == want {
            return i + 1;
        }
    }
    unreachable!()
}

#[test]
fn a_subscriber_that_closed_is_counted_nowhere() {
    let broker = Broker::start(&[]);
    let (mut a, mut b, mut p) = (broker.client(), broker.client(), broker.client());
    a.sub("t");
    b.sub("t");
    b.sub("u");
    drop(b);
    // The server sees b's end some time after the drop: count until then.
    let n = publish_until(&mut p, "t", ":1");
    for i in 0..n {
        assert_eq!(a.line(), format!("MSG t {i}"));
    }
    // Gone from every topic it had, not only the one published to.
    assert_eq!(p.cmd("PUB u x"), ":0");
    assert_eq!(p.cmd("PUB t last"), ":1");
    assert_eq!(a.line(), "MSG t last");
}

#[test]
fn a_subscriber_that_never_reads_is_dropped_and_the_others_get_everything() {
    const N: usize = 1500; // 1.5 MiB: past the kernel's buffers and 64 KiB
    let mut broker = Broker::start(&["--max-buffer", "64K"]);
    let (mut reader, mut slow, mut p) = (broker.client(), broker.client(), broker.client());
    for topic in ["big", "other"] {
        reader.sub(topic);
        slow.sub(topic);
    }
    let payload = |i: usize| format!("{i:06}{}", "x".repeat(1018));
    let reading = std::thread::spawn(move || {
        for i in 0..N {
            assert_eq!(
                reader.line(),
                format!("MSG big {}", payload(i)),
                "message {i}"
            );
        }
        reader
    });
    let counts: Vec<String> = (0..N)
        .map(|i| p.cmd(&format!("PUB big {}", payload(i))))
        .collect();
    let mut reader = reading
        .join()
        .expect("the reading subscriber got all, in order");
    // The slow one was counted until it overflowed, then never again.
    let kept = counts.iter().take_while(|c| *c == ":2").count();
    assert!(kept < N, "never dropped");
    assert!(counts[kept..].iter().all(|c| c == ":1"), "{counts:?}");
    // Nor on its other topics.
    assert_eq!(p.cmd("PUB other x"), ":1");
    assert_eq!(reader.line(), "MSG other x");

    // What it was owed still comes, whole and in order, then the end.
    let mut rest = Vec::new();
    match slow.r.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the dropped subscriber was not closed: {e}"),
    }
    // (Read, so it drained within the drain timeout: all of it came.)
    assert!(rest.ends_with(b"\n"), "a cut line");
    let lines: Vec<&[u8]> = rest[..rest.len() - 1].split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), kept, "it gets exactly what it was counted for");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("MSG big {}", payload(i)).as_bytes());
    }
    broker.wait_for("dropped: too slow");

    // A message no subscriber could ever hold is refused, dropping nobody.
    let huge = format!("PUB big {}", "y".repeat(64 << 10));
    assert!(p.cmd(&huge).starts_with("-ERR "));
    assert_eq!(p.cmd("PUB big end"), ":1");
    assert_eq!(reader.line(), "MSG big end");
}

#[test]
fn tick_counts_up_every_tick_ms() {
    let broker = Broker::start(&["--tick-ms", "20"]);
    let mut s = broker.client();
    s.sub("$tick");
    let ticks: Vec<u64> = (0..3)
        .map(|_| {
            let line = s.line();
            let n = line.strip_prefix("MSG $tick ").expect("a tick");
            n.parse().expect("a number")
        })
        .collect();
    assert!(ticks[0] >= 1);
    assert_eq!(ticks, [ticks[0], ticks[0] + 1, ticks[0] + 2]);
    // Only the server publishes to its topics.
    let mut p = broker.client();
    assert!(p.cmd("PUB $tick 99").starts_with("-ERR "));
}

#[test]
fn stdin_lines_go_to_the_stdin_topic() {
    let mut broker = Broker::start(&[]);
    let (mut a, mut b) = (broker.client(), broker.client());
    a.sub("$stdin");
    b.sub("$stdin");
    let mut stdin = broker.stdin.take().expect("stdin");
    stdin
        .write_all(b"one\ntwo words\n\n\xffbytes\nlast without newline")
        .expect("write stdin");
    drop(stdin); // EOF: the topic goes quiet, the server goes on
    for s in [&mut a, &mut b] {
        assert_eq!(s.raw_line(), b"MSG $stdin one");
        assert_eq!(s.raw_line(), b"MSG $stdin two words");
        assert_eq!(s.raw_line(), b"MSG $stdin ");
        assert_eq!(s.raw_line(), b"MSG $stdin \xffbytes");
        assert_eq!(s.raw_line(), b"MSG $stdin last without newline");
    }
    let mut p = broker.client();
    assert_eq!(p.cmd("PUB t x"), ":0");
}

#[test]
fn bad_commands_get_err_and_the_connection_stays_open() {
    let broker = Broker::start(&[]);
    let mut c = broker.client();
    let long = "t".repeat(65);
    for bad in [
        "FROB x",
        "",
        "SUB",
        "SUB ",
        &format!("SUB {long}"),
        "SUB a b",
        "UNSUB",
        "PUB",
        "PUB t",
        "PUB  x",
        &format!("PUB {long} x"),
        "PUB $mine x",
    ] {
        let reply = c.cmd(bad);
        assert!(reply.starts_with("-ERR "), "{bad:?} got {reply:?}");
    }
    let longest = "t".repeat(64);
    c.sub(&longest);
    assert_eq!(c.cmd("sub lower"), "+OK", "command names ignore case");
    assert_eq!(
        c.cmd(&format!("PUB {longest} x")),
        format!("MSG {longest} x")
    );
    assert_eq!(c.line(), ":1");
}

/// Signals `signal` and checks a clean exit: status 0, socket file gone,
/// the open connection ended.
fn stops_cleanly_on(sig: i32) {
    let mut broker = Broker::start(&[]);
    let mut s = broker.client();
    s.sub("t");
    assert!(exists(&broker.path));
    signal(broker.child.id() as i32, sig);
    let status = exit_within(&mut broker.child, "the pubsub example");
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(!exists(&broker.path), "socket file left behind");
    let mut rest = Vec::new();
    s.r.read_to_end(&mut rest).expect("EOF");
    assert_eq!(rest, b"");
}

#[test]
fn sigterm_and_sigint_stop_it_and_remove_the_socket_file() {
    stops_cleanly_on(libc::SIGTERM);
    stops_cleanly_on(libc::SIGINT);
}

#[test]
fn usage_errors_exit_2_and_bind_errors_exit_1() {
    let dir = TempDir::new("pubsub-usage");
    let path = dir.path("ps.sock");
    let path = path.to_str().expect("utf-8 path");
    for args in [
        &[][..],
        &[path, "--max-buffer", "12Q"],
        &[path, "--max-buffer", "0"],
        &[path, "--tick-ms", "0"],
        &[path, "--frob"],
    ] {
        let (status, stderr) = run_to_exit(Command::new(example()).args(args));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "{args:?}: no message");
    }
    let missing = dir.path("no/such/dir/ps.sock");
    let (status, stderr) = run_to_exit(Command::new(example()).arg(&missing));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
