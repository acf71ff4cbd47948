//! Connection limits against the real binary: `--max-connections` closes
//! the surplus at once, running out of descriptors neither spins nor
//! stalls (the backlog is served as descriptors come free), and
//! `--idle-timeout` closes quiet connections but not busy ones.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{bin, connect, cpu_ticks, stat, Proc, TempDir};

/// Sends `msg` and expects it back whole.
fn echo(s: &mut UnixStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).expect("read echo");
    assert_eq!(got, msg);
}

/// Reads until EOF (or a reset) and returns how long it took; fails if
/// any byte arrives or nothing happens within `limit`.
fn eof_within(s: &mut UnixStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("expected EOF, got {n} bytes"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF within {limit:?}, got {e}"),
    }
    start.elapsed()
}

#[test]
fn connections_past_the_limit_are_closed_at_once() {
    let dir = TempDir::new("limit");
    let path = dir.path("s.sock");
    let sp = path.to_str().unwrap();
    let mut server = Proc::serve(&[sp, "--max-connections", "10"]);

    let mut held: Vec<UnixStream> = (0..10).map(|_| connect(&path)).collect();
    // Each one echoing proves it was accepted before the next arrives.
    for (i, s) in held.iter_mut().enumerate() {
        echo(s, format!("hello {i}").as_bytes());
    }
    let mut eleventh = connect(&path);
    let took = eof_within(&mut eleventh, Duration::from_secs(5));
    assert!(took < Duration::from_secs(2), "EOF took {took:?}");
    server.wait_for("connection limit 10 reached");

    for (i, s) in held.iter_mut().enumerate() {
        echo(s, format!("still here {i}").as_bytes());
    }
    counts(
        &mut server,
        &[("rejected", 1), ("accepted", 10), ("open", 10)],
    );
    assert!(server.stop().success());
}

/// The soft open-file limit is raised to the hard one at start, and the
/// default `--max-connections` is that limit less a reserve (32), so the
/// surplus is refused cleanly before descriptors run out.
#[test]
fn default_limit_follows_the_raised_open_file_limit() {
    let dir = TempDir::new("nofile");
    let path = dir.path("s.sock");
    let sp = path.to_str().unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=40:64", "--", bin(), sp]);
    let mut server = Proc::spawn_cmd(&mut cmd);
    server.wait_for("listening on");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().collect::<Vec<_>>()[3..5],
        ["64", "64"],
        "{nofile}"
    );

    let mut clients: Vec<UnixStream> = (0..32).map(|_| connect(&path)).collect();
    for (i, s) in clients.iter_mut().enumerate() {
        echo(s, format!("client {i}").as_bytes());
    }
    for _ in 0..5 {
        eof_within(&mut connect(&path), Duration::from_secs(5));
    }
    server.wait_for("connection limit 32 reached");
    counts(
        &mut server,
        &[("accepted", 32), ("rejected", 5), ("accept_errors", 0)],
    );
    echo(&mut clients[31], b"last one still served");
    assert!(server.stop().success());
}

/// A flood of surplus connections gives one warning line, not one each;
/// the next line, a second later, carries the count.
#[test]
fn surplus_warnings_are_rate_limited() {
    let dir = TempDir::new("limit-log");
    let path = dir.path("s.sock");
    let sp = path.to_str().unwrap();
    let mut server = Proc::serve(&[sp, "--max-connections", "1"]);
    let mut held = connect(&path);
    echo(&mut held, b"in");

    let start = Instant::now();
    for _ in 0..100 {
        eof_within(&mut connect(&path), Duration::from_secs(5));
    }
    let flood = start.elapsed();
    counts(&mut server, &[("rejected", 100), ("accepted", 1)]);
    let warned = |p: &Proc| {
        p.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("connection limit 1 reached"))
            .count()
    };
    // The stats line follows the warnings on stderr, so all are in.
    let lines = warned(&server);
    assert!(
        lines <= 2 + flood.as_secs() as usize,
        "{lines} warnings for 100 rejections in {flood:?}"
    );

    // Once the second is over, the next rejection reports the count.
    while start.elapsed() < Duration::from_millis(1100) {
        thread::sleep(Duration::from_millis(50));
    }
    eof_within(&mut connect(&path), Duration::from_secs(5));
    let line = server.wait_for("connection limit 1 reached");
    if lines == 1 {
        assert!(line.contains("(100 "), "{line}");
    }
    echo(&mut held, b"still in");
    assert!(server.stop().success());
}

/// Checks several counters from one SIGUSR1 line.
fn counts(p: &mut Proc, want: &[(&str, u64)]) {
    p.signal(10);
    let line = p.wait_for("stats open=");
    for (key, value) in want {
        assert_eq!(stat(&line, key), *value, "{key} in {line:?}");
    }
}

/// With 64 descriptors and 100 clients: the server neither spins nor
/// stalls, serves whom it holds, and takes the backlog in as soon as
/// descriptors come free, with no new connection to prompt it.
#[test]
fn out_of_descriptors_neither_spins_nor_stalls() {
    const CLIENTS: usize = 100;
    let dir = TempDir::new("emfile");
    let path = dir.path("s.sock");
    let sp = path.to_str().unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args([
        "--nofile=64:64",
        "--",
        bin(),
        sp,
        "--max-connections",
        "1000",
    ]);
    let mut server = Proc::spawn_cmd(&mut cmd);
    server.wait_for("listening on");

    // Every client connects (the backlog holds the surplus) and says hello.
    let mut clients: Vec<UnixStream> = (0..CLIENTS)
        .map(|i| {
            let mut s = connect(&path);
            s.write_all(format!("hello {i:03}").as_bytes()).unwrap();
            s
        })
        .collect();
    server.wait_for("Too many open files");
    let held = server.counter("open") as usize;
    assert!(
        (20..CLIENTS - 20).contains(&held),
        "{held} connections open with 64 descriptors"
    );

    // Accepts are FIFO: the first `held` are served, the rest wait.
    for (i, s) in clients.iter_mut().enumerate().take(held) {
        let mut got = [0; 9];
        s.read_exact(&mut got).expect("echo from a held connection");
        assert_eq!(&got, format!("hello {i:03}").as_bytes());
    }
    assert_waiting(&clients[held..]);

    // Saturated: CPU use over one second stays near zero, and the held
    // connections keep echoing meanwhile. (The sleep is the measuring
    // window, not synchronisation.)
    let pid = server.pid();
    let before = cpu_ticks(pid);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        echo(&mut clients[0], b"ping");
        echo(&mut clients[held - 1], b"pong");
        thread::sleep(Duration::from_millis(100));
    }
    let ticks = cpu_ticks(pid) - before;
    eprintln!(
        "server CPU while out of descriptors ({held} held, {} waiting): \
         {ticks} ticks (1/100 s) in {:?}",
        CLIENTS - held,
        start.elapsed()
    );
    // A busy loop would burn ~100 ticks a second; 20 echoes and two
    // paused-accept retries cost well under one.
    assert!(ticks < 10, "{ticks} ticks of CPU in ~1 s while saturated");
    assert_waiting(&clients[held..]);

    // Close 10 held connections: the next 10 in the backlog are taken in
    // and answered, with no new connection arriving to prompt it.
    let freed = Instant::now();
    clients.drain(..10);
    for (i, s) in clients.iter_mut().enumerate().skip(held - 10).take(10) {
        let mut got = [0; 9];
        s.read_exact(&mut got)
            .expect("echo once descriptors came free");
        assert_eq!(&got, format!("hello {:03}", i + 10).as_bytes());
    }
    eprintln!(
        "backlog served {:?} after descriptors came free",
        freed.elapsed()
    );

    // Close every held one: all the rest get in.
    let waiting = clients.split_off(held);
    drop(clients);
    for (i, mut s) in waiting.into_iter().enumerate() {
        let mut got = [0; 9];
        s.read_exact(&mut got).expect("echo from the backlog");
        assert_eq!(&got, format!("hello {:03}", i + held + 10).as_bytes());
    }
    assert!(server.counter("accept_errors") > 0);
    assert!(server.stop().success());
}

/// None of `clients` has been answered yet.
fn assert_waiting(clients: &[UnixStream]) {
    for s in clients {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0; 16];
        match (&*s).read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!("a connection in the backlog got {other:?}"),
        }
        s.set_nonblocking(false).unwrap();
    }
}

#[test]
fn idle_connections_close_and_busy_ones_stay() {
    let dir = TempDir::new("idle");
    let path = dir.path("s.sock");
    let sp = path.to_str().unwrap();
    let mut server = Proc::serve(&[sp, "--idle-timeout", "1"]);

    let mut busy = connect(&path);
    echo(&mut busy, b"first");
    let opened = Instant::now();
    let mut idle = connect(&path);
    let idle_thread = thread::spawn(move || eof_within(&mut idle, Duration::from_secs(10)));

    // Traffic every 200 ms for 2.5 s: well past the idle timeout.
    while opened.elapsed() < Duration::from_millis(2500) {
        thread::sleep(Duration::from_millis(200));
        echo(&mut busy, b"tick");
    }
    let idle_after = idle_thread.join().unwrap();
    assert!(
        idle_after >= Duration::from_millis(900) && idle_after < Duration::from_secs(5),
        "idle connection closed after {idle_after:?}"
    );
    echo(&mut busy, b"still open");

    // Quiet now: its deadline, moved on by every echo, comes due.
    let busy_after = eof_within(&mut busy, Duration::from_secs(10));
    assert!(
        busy_after >= Duration::from_millis(900) && busy_after < Duration::from_secs(5),
        "busy connection closed {busy_after:?} after going quiet"
    );
    counts(&mut server, &[("closed_idle", 2), ("open", 0)]);
    assert!(server.stop().success());
}
