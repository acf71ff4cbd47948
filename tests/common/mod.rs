//! Shared test harness: start the real binary on a socket in a fresh
//! temporary directory, wait for its "listening" line, read its logs, stop
//! it. Functions unused by one test file are used by another.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_uds-reactor")
}

/// A fresh, empty directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("udsr-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `uds-reactor` process whose stderr is collected line by line.
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
    /// Every stderr line seen so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// How long any wait in the tests may take before it counts as a failure.
pub const PATIENCE: Duration = Duration::from_secs(20);

impl Proc {
    /// Starts the binary with `args` (nothing waited for).
    pub fn spawn(args: &[&str]) -> Proc {
        Proc::spawn_cmd(Command::new(bin()).args(args))
    }

    /// Starts a prepared command, capturing its stderr.
    pub fn spawn_cmd(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn uds-reactor");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Proc { child, lines, log }
    }

    /// Starts the server with `args` and waits until it logs `listening on`.
    pub fn serve(args: &[&str]) -> Proc {
        let mut p = Proc::spawn(args);
        p.wait_for("listening on");
        p
    }

    /// Waits for a stderr line containing `needle`; panics after PATIENCE.
    pub fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing {needle:?}; log so far:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// All stderr so far, one string.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to this process (only ever our own child).
    pub fn signal(&self, signal: i32) {
        // Safe wrapper unavailable in std; `kill` via the command keeps
        // tests free of unsafe.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; panics after PATIENCE.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(15);
        self.wait_exit()
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of a process, in clock ticks (from /proc/PID/stat).
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields after ")" start at field 3 (state); utime is 14, stime 15.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A small deterministic RNG for sizes and chunkings.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// Whether `path` exists without following a symlink.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The value of `key` in a logfmt `stats ...` line.
pub fn stat(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

impl Proc {
    /// Asks for the counters (SIGUSR1) and returns the `stats ...` line.
    pub fn stats(&mut self) -> String {
        self.signal(libc::SIGUSR1);
        self.wait_for("stats open=")
    }

    /// One counter, fresh from SIGUSR1.
    pub fn counter(&mut self, key: &str) -> u64 {
        let line = self.stats();
        stat(&line, key)
    }
}

/// Message `i` of `len` bytes: its index in the first bytes (when it has
/// room), then a pattern, so a reordered, merged or cut message cannot
/// match another.
pub fn tagged(i: usize, len: usize) -> Vec<u8> {
    let mut m = pattern(i as u64 + 1, len);
    let tag = (i as u32).to_be_bytes();
    let k = len.min(4);
    m[..k].copy_from_slice(&tag[..k]);
    m
}

/// Runs `cmd` to completion (stdin and stdout null); returns its status
/// and its whole stderr.
pub fn run_to_exit(cmd: &mut Command) -> (ExitStatus, String) {
    use std::io::Read;
    let mut child = cmd
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = exit_within(&mut child, "the process");
    (status, reader.join().expect("stderr reader"))
}

/// Waits for `child` to exit; after [`PATIENCE`] kills it and panics,
/// naming it as `what`.
pub fn exit_within(child: &mut std::process::Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The binary started with `args` under `umask` (through `sh`).
pub fn under_umask(umask: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(bin())
        .args(args);
    cmd
}

/// This process's effective uid and gid, from /proc (no unsafe `geteuid`).
pub fn our_ids() -> (u32, u32) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let effective = |key: &str| -> u32 {
        let line = status.lines().find(|l| l.starts_with(key)).expect(key);
        // "Uid:\treal\teffective\tsaved\tfs"
        line.split_whitespace()
            .nth(2)
            .expect(key)
            .parse()
            .expect(key)
    };
    (effective("Uid:"), effective("Gid:"))
}

/// A library server running a handler on its own thread; stopped (and
/// joined) on drop if the test did not stop it.
pub struct Library {
    handle: uds_reactor::Handle,
    thread: Option<std::thread::JoinHandle<Result<uds_reactor::Stats, uds_reactor::Error>>>,
}

impl Library {
    /// Binds `config` with `handler` and runs it on a new thread.
    pub fn start<H>(config: uds_reactor::Config, handler: H) -> Library
    where
        H: uds_reactor::Handler + Send + 'static,
        H::State: Send,
    {
        let server = uds_reactor::Server::with_handler(config, handler).expect("bind");
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run());
        Library {
            handle,
            thread: Some(thread),
        }
    }

    /// A handle to the running server.
    pub fn handle(&self) -> uds_reactor::Handle {
        self.handle.clone()
    }

    /// Stops the server through its handle and returns its final counters.
    pub fn stop(mut self) -> uds_reactor::Stats {
        self.handle.stop();
        let thread = self.thread.take().expect("running");
        thread.join().expect("server thread").expect("run")
    }
}

impl Drop for Library {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.handle.stop();
            let _ = thread.join();
        }
    }
}

/// A stream connection to `path` whose reads and writes give up after
/// [`PATIENCE`] (a hung server fails the test instead of hanging it).
pub fn connect(path: &Path) -> std::os::unix::net::UnixStream {
    let s = std::os::unix::net::UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.set_write_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Writes `data` to a new connection from another thread, half-closes,
/// and returns everything read back until EOF.
pub fn echo_through(path: &Path, data: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let mut w = s.try_clone().expect("clone");
    let sent = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).expect("write");
        w.shutdown(std::net::Shutdown::Write).expect("shutdown");
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("read");
    writer.join().expect("writer");
    got
}

impl Proc {
    /// Waits for a stderr line containing `needle` or for the process to
    /// exit, whichever comes first: `Ok(line)` or `Err(status)`. Panics
    /// after PATIENCE.
    pub fn wait_for_or_exit(&mut self, needle: &str) -> Result<String, ExitStatus> {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(10)) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // stderr closed: the process is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(self.wait_exit()),
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(status);
            }
        }
        panic!(
            "neither a line containing {needle:?} nor an exit; log so far:\n{}",
            self.log_text()
        );
    }

    /// Once the process has exited (or closed stderr): waits until its
    /// stderr is read to the end and returns all of it, one string.
    pub fn log_at_exit(&mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return self.log_text(),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("stderr still open; log so far:\n{}", self.log_text())
                }
            }
        }
    }
}

/// Sends `signal` to `pid`: only ever a process this test started,
/// directly or through a wrapper (`strace`, `sh -c ... exec`).
pub fn signal(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

impl Proc {
    /// [`stats`](Self::stats) when the server is `pid`, a child of this
    /// process (run under a wrapper that does not forward signals).
    pub fn stats_of(&mut self, pid: i32) -> String {
        signal(pid, libc::SIGUSR1);
        self.wait_for("stats open=")
    }
}

/// Descriptors process `pid` has open (`/proc/PID/fd`).
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

impl Proc {
    /// Waits until this process has exactly `want` descriptors open (a
    /// server closes what a finished connection held as it reaps it, a
    /// moment after the peer goes); panics after PATIENCE with the log.
    pub fn fds_back_to(&self, want: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = open_fds(self.pid());
            if now == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{now} descriptors open, want {want}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
