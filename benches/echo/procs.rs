//! The servers under test as child processes: start, pin, read their CPU
//! time and RSS from /proc, stop. Only children this bench started are
//! ever signalled, by their pid.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Which program serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The release uds-reactor binary.
    Reactor,
    /// Another uds-reactor binary (`UDSR_BENCH_BASELINE`), to compare a
    /// change with the build before it in the same run.
    Baseline,
    /// A peer in benches/peers, by its name.
    Peer(&'static str),
    /// The release binary with these flags.
    ReactorWith(&'static [&'static str]),
}

/// A server child process, killed on drop.
pub struct Server {
    pub name: &'static str,
    pub path: PathBuf,
    child: Child,
}

impl Server {
    /// Starts `kind` on `path`, pins it to `cpu` (if any) and waits until
    /// it accepts a connection.
    pub fn start(name: &'static str, kind: Kind, path: PathBuf, cpu: Option<usize>) -> Server {
        let mut cmd = match kind {
            Kind::Reactor => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_uds-reactor"));
                c.arg(&path).args(["--log-level", "warn"]);
                c
            }
            Kind::Baseline => {
                let bin = std::env::var_os("UDSR_BENCH_BASELINE").expect("UDSR_BENCH_BASELINE");
                let mut c = Command::new(bin);
                c.arg(&path).args(["--log-level", "warn"]);
                c
            }
            Kind::ReactorWith(flags) => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_uds-reactor"));
                c.arg(&path).args(["--log-level", "warn"]).args(flags);
                c
            }
            Kind::Peer(peer) => {
                let mut c = Command::new(std::env::current_exe().expect("own executable"));
                c.args(["--peer", peer]).arg(&path);
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut server = Server { name, path, child };
        if let Some(cpu) = cpu {
            // Before it accepts anything, so every thread it makes inherits.
            pin(server.pid(), cpu);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(&server.path).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// User + system CPU time of the whole process (all threads) so far.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// Resident set size in bytes.
    pub fn rss(&self) -> u64 {
        proc_field(&format!("/proc/{}/status", self.pid()), "VmRSS:") * 1024
    }

    /// SIGTERM, then SIGKILL if it has not exited in time.
    pub fn stop(mut self) {
        // SAFETY: signals our own child, which has not been reaped yet
        // (the `Child` still owns it), so the pid cannot be reused.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Peers do not remove their socket file.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The benches' placement: on two or more CPUs, servers on CPU 0 and the
/// load (this process, and the load generators it starts) on CPU 1, this
/// process pinned there now; `(server CPU, load CPU)`, both `None` on one.
pub fn placement() -> (Option<usize>, Option<usize>) {
    if cpus() < 2 {
        return (None, None);
    }
    pin(0, 1);
    (Some(0), Some(1))
}

/// Pins every thread of process `pid` (0 = this one) to `cpu`.
pub fn pin(pid: u32, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked by the caller's core count).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let tids: Vec<i32> = if pid == 0 {
        vec![0]
    } else {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_else(|_| vec![pid as i32])
    };
    for tid in tids {
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let r = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if r != 0 {
            eprintln!(
                "sched_setaffinity({tid}, cpu {cpu}): {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// utime + stime of a process, from /proc/PID/stat (fields 14 and 15).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; fields restart after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11) // state (field 3) .. cmajflt (field 13)
        .take(2)
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let ticks: u64 = fields.iter().sum();
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// The first number after `key` on its line in a /proc file.
fn proc_field(file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A fresh private directory for the sockets, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("udsr-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Connections kept open by the RSS workload, each having echoed a byte.
pub fn open_idle(path: &Path, n: usize) -> std::io::Result<Vec<UnixStream>> {
    use std::io::{Read, Write};
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"x")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        v.push(s);
    }
    Ok(v)
}
