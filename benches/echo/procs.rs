//! The servers under test as child processes: start, pin, read their CPU
//! time and RSS from /proc, stop. Only children this bench started are
//! ever signalled, by their pid.

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uds_reactor::SocketType;

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
}

/// A server to start: the program, and what it serves.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// The name in the table.
    pub name: &'static str,
    pub kind: Kind,
    /// The socket type it listens on (uds-reactor gets `--type`).
    pub ty: SocketType,
    /// More uds-reactor flags (ignored for peers).
    pub flags: &'static [&'static str],
}

/// A server child process, killed on drop.
pub struct Server {
    pub name: &'static str,
    pub path: PathBuf,
    child: Child,
}

impl Server {
    /// Starts `spec` on `path`, pins it to `cpu` (if any) and waits until
    /// it answers a connect of its socket type.
    pub fn start(spec: &Spec, path: PathBuf, cpu: Option<usize>) -> Server {
        let name = spec.name;
        let reactor = |bin: &std::ffi::OsStr| {
            let mut c = Command::new(bin);
            c.arg(&path)
                .args(["--log-level", "warn", "--type", spec.ty.as_str()])
                .args(spec.flags);
            c
        };
        let mut cmd = match spec.kind {
            Kind::Reactor => reactor(env!("CARGO_BIN_EXE_uds-reactor").as_ref()),
            Kind::Baseline => {
                let bin = std::env::var_os("UDSR_BENCH_BASELINE").expect("UDSR_BENCH_BASELINE");
                reactor(&bin)
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
        while !answers(&server.path, spec.ty) {
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

    /// The process's CPU time so far, for [`CpuReading::since`].
    pub fn cpu(&self) -> CpuReading {
        CpuReading::of(self.pid())
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

/// Whether a server of type `ty` is bound on `path` and takes a connect
/// (a datagram socket's connect only checks that it is bound).
fn answers(path: &Path, ty: SocketType) -> bool {
    match ty {
        SocketType::Stream => UnixStream::connect(path).is_ok(),
        SocketType::Dgram => UnixDatagram::unbound()
            .and_then(|s| s.connect(path))
            .is_ok(),
        SocketType::Seqpacket => {
            use socket2::{Domain, SockAddr, Socket, Type};
            let addr = SockAddr::unix(path);
            let sock = Socket::new(Domain::UNIX, Type::SEQPACKET, None);
            matches!((sock, addr), (Ok(s), Ok(a)) if s.connect(&a).is_ok())
        }
    }
}

/// Where the servers and the load generator run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `split`, `same`, or `unpinned` on one CPU.
    pub name: &'static str,
    /// The CPU the servers are pinned to.
    pub server: Option<usize>,
    /// The CPU the load generator is pinned to.
    pub load: Option<usize>,
}

impl Placement {
    /// Servers on CPU 0, the load generator on CPU 1: each side has a CPU,
    /// and every message costs cross-CPU wake-ups.
    pub const SPLIT: Placement = Placement {
        name: "split",
        server: Some(0),
        load: Some(1),
    };
    /// Servers and load generator both on CPU 0: no cross-CPU wake-ups, and
    /// on two cores shared with other work the quieter of the two.
    pub const SAME: Placement = Placement {
        name: "same",
        server: Some(0),
        load: Some(0),
    };

    /// One line saying where things run.
    pub fn describe(&self) -> String {
        let cpu = |c: Option<usize>| c.map_or("any CPU".to_owned(), |c| format!("CPU {c}"));
        format!(
            "{}: servers on {}, load generator on {}",
            self.name,
            cpu(self.server),
            cpu(self.load)
        )
    }
}

/// The placements `which` names (`split`, `same` or `both`); on fewer
/// than two CPUs, one unpinned placement whatever was asked. With two or
/// more, this process (which holds the idle workload's connections and
/// otherwise waits) is pinned to CPU 1.
///
/// # Errors
///
/// An unknown name.
pub fn placements(which: &str) -> Result<Vec<Placement>, String> {
    let chosen = match which {
        "split" => vec![Placement::SPLIT],
        "same" => vec![Placement::SAME],
        "both" => vec![Placement::SPLIT, Placement::SAME],
        other => {
            return Err(format!(
                "UDSR_BENCH_PLACEMENT={other}: not split, same or both"
            ))
        }
    };
    if cpus() < 2 {
        return Ok(vec![Placement {
            name: "unpinned",
            server: None,
            load: None,
        }]);
    }
    pin(0, 1);
    Ok(chosen)
}

/// The split placement as `(server CPU, load CPU)`, this process pinned
/// to the load CPU; both `None` on one CPU (the pubsub bench's).
pub fn placement() -> (Option<usize>, Option<usize>) {
    if cpus() < 2 {
        return (None, None);
    }
    pin(0, 1);
    (Placement::SPLIT.server, Placement::SPLIT.load)
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

/// A bench setting from the environment: unset and empty are the same.
pub fn setting(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// A numeric setting, `default` when unset or not a number, clamped to
/// `range`.
pub fn setting_in<T>(key: &str, default: T, range: std::ops::RangeInclusive<T>) -> T
where
    T: std::str::FromStr + PartialOrd + Copy,
{
    let v = setting(key).and_then(|v| v.parse().ok()).unwrap_or(default);
    match v {
        v if v < *range.start() => *range.start(),
        v if v > *range.end() => *range.end(),
        v => v,
    }
}

/// Repetitions and seconds of sending per run: `UDSR_BENCH_REPS` and
/// `UDSR_BENCH_SECS` over `normal`, or over `quick` with
/// `UDSR_BENCH_QUICK` set (not `0`).
pub fn reps_and_secs(normal: (usize, f64), quick: (usize, f64)) -> (usize, f64) {
    let is_quick = setting("UDSR_BENCH_QUICK").is_some_and(|v| v != "0");
    let (reps, secs) = if is_quick { quick } else { normal };
    (
        setting_in("UDSR_BENCH_REPS", reps, 1..=20),
        setting_in("UDSR_BENCH_SECS", secs, 0.1..=30.0),
    )
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A process's CPU time at one moment, read two ways: `utime + stime`
/// (/proc/PID/stat), which counts every thread, dead ones included, but in
/// clock ticks (10 ms: 1-2% of a one-second run); and the scheduler's own
/// runtime in nanoseconds (/proc/PID/schedstat), exact but only the main
/// thread's, so kept only while the process has no other.
#[derive(Clone, Copy, Debug)]
pub struct CpuReading {
    ticks: Duration,
    /// The exact runtime, if the process was one thread.
    exact: Option<Duration>,
}

impl CpuReading {
    fn of(pid: u32) -> CpuReading {
        let one_thread = proc_field(&format!("/proc/{pid}/status"), "Threads:") == 1;
        let exact = one_thread.then(|| schedstat(pid)).flatten();
        CpuReading {
            ticks: cpu_ticks(pid),
            exact,
        }
    }

    /// CPU time used between `before` and this reading: the exact figure
    /// when both are exact and agree with the tick count (within two ticks
    /// and 2%: a thread that came and went in between would make them
    /// disagree), else the tick count.
    pub fn since(self, before: CpuReading) -> Duration {
        let ticks = self.ticks.saturating_sub(before.ticks);
        let (Some(now), Some(then)) = (self.exact, before.exact) else {
            return ticks;
        };
        let exact = now.saturating_sub(then);
        let slack = Duration::from_millis(20) + exact / 50;
        match exact.abs_diff(ticks) <= slack {
            true => exact,
            false => ticks,
        }
    }
}

/// utime + stime of a process, from /proc/PID/stat (fields 14 and 15).
fn cpu_ticks(pid: u32) -> Duration {
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

/// The main thread's time on a CPU, in nanoseconds (the first field of
/// /proc/PID/schedstat); None where the kernel does not keep it.
fn schedstat(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let ns = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
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
