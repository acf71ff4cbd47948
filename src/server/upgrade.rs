//! The binary upgrade on SIGUSR2, nginx's way: start the program again
//! with the listening sockets, let it say it listens, and only then stop
//! accepting and drain.
//!
//! ```text
//! Idle ──SIGUSR2──> Starting ──one byte: "listening"──> HandedOver ──> exit 0
//!  ^                  │  (new process exited, or 10 s)     │  once nothing is owed, or
//!  └── error line, ───┘                                    │  --drain-timeout after the
//!      kill it, serve on                                   │  handover: stop as on SIGTERM
//! ```
//!
//! The listening socket is never closed before the handover, so no
//! `connect()` is refused: until then both processes accept from the one
//! socket, and what waits in the backlog after it is the new one's. The
//! socket file goes with the socket: the old process forgets it, the new
//! one, told its device and inode, owns it if the path still names it.
//!
//! The races, and what wins:
//! - a stop (SIGTERM, [`Handle::stop`](super::Handle::stop)) while
//!   starting: if the new process has said it listens, the handover
//!   completes first and the stop drains without touching the file; if
//!   not, it has accepted nothing yet, so it is killed and the stop goes
//!   on as usual (the file is still ours and removed);
//! - the new process exits right after saying it listens: caught if its
//!   exit is seen before the handover (serve on); after it, the socket is
//!   its, and we log that it exited;
//! - SIGUSR2 while starting, after a handover, or while stopping: ignored
//!   with a warning.

use std::ffi::OsString;
use std::io::{self, Read};
use std::mem;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use signal_hook::consts::SIGUSR2;
use signal_hook_mio::v1_0::Signals;
use socket2::Socket;

use super::{lifecycle::plural, Endpoint, Server, SIGNALS, UPGRADE_CHILD, UPGRADE_READY};
use crate::error::Error;
use crate::handler::Handler;
use crate::sys::{self, Handing, SocketFile};

/// How long the new process has to say it listens.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);

/// The program an upgrade starts: a path and the arguments to give it.
#[derive(Clone, Debug)]
pub struct Program {
    path: PathBuf,
    arg0: OsString,
    args: Vec<OsString>,
}

impl Program {
    /// This process's own executable and arguments. Call it at start: the
    /// path is resolved now (`/proc/self/exe`), so that the file a new
    /// build is later installed as, by rename, at that path is what an
    /// upgrade runs.
    ///
    /// # Errors
    ///
    /// The executable's path cannot be read.
    pub fn current() -> io::Result<Program> {
        let path = std::env::current_exe()?;
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| path.clone().into_os_string());
        Ok(Program {
            path,
            arg0,
            args: args.collect(),
        })
    }

    /// `path` run with `args` (its `argv[0]` is `path`).
    pub fn new<I, A>(path: impl Into<PathBuf>, args: I) -> Program
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        let path = path.into();
        Program {
            arg0: path.clone().into_os_string(),
            path,
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// The executable started.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Where an upgrade stands, on both sides of one.
pub(super) struct Upgrade {
    /// What SIGUSR2 starts; `None` until [`Server::handle_upgrades`].
    program: Option<Program>,
    phase: Phase,
    /// In a process an upgrade started: the channel to tell the old one
    /// we listen, until [`announce`](Server::announce) does.
    tell: Option<Socket>,
}

enum Phase {
    Idle,
    /// The new process was started and has until `deadline` to listen.
    Starting {
        new: NewProcess,
        deadline: Instant,
    },
    /// The new process listens; we stopped accepting at `since` and serve
    /// the connections we have (`new` is kept to log its exit).
    HandedOver {
        since: Instant,
        new: Option<NewProcess>,
    },
}

/// The new process and what we watch it by.
struct NewProcess {
    child: Child,
    /// Our end of the readiness channel; `None` once it hit EOF.
    ready: Option<Socket>,
    /// Readable once the process exits; `None` before Linux 5.3 (its exit
    /// is then noticed at the deadline).
    pidfd: Option<OwnedFd>,
}

impl Upgrade {
    pub(super) fn new(tell: Option<Socket>) -> Upgrade {
        Upgrade {
            program: None,
            phase: Phase::Idle,
            tell,
        }
    }

    /// Whether the socket went to a new process.
    pub(super) fn handed_over(&self) -> bool {
        matches!(self.phase, Phase::HandedOver { .. })
    }

    /// The channel to the old process, for the one call that uses it.
    pub(super) fn take_tell(&mut self) -> Option<Socket> {
        self.tell.take()
    }
}

impl NewProcess {
    /// Reads the readiness channel: whether the byte saying "listening"
    /// came. EOF (the process closed its end) stops the watching; its exit
    /// or the deadline tells the rest.
    fn said_ready(&mut self, registry: &Registry) -> bool {
        let Some(ready) = &self.ready else {
            return false;
        };
        let mut byte = [0; 1];
        loop {
            match (&*ready).read(&mut byte) {
                Ok(0) => break,
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    debug!("upgrade: read the readiness channel: {e}");
                    break;
                }
            }
        }
        self.close_ready(registry);
        false
    }

    fn close_ready(&mut self, registry: &Registry) {
        if let Some(ready) = self.ready.take() {
            let _ = registry.deregister(&mut SourceFd(&ready.as_raw_fd()));
        }
    }

    fn close(&mut self, registry: &Registry) {
        self.close_ready(registry);
        if let Some(pidfd) = self.pidfd.take() {
            let _ = registry.deregister(&mut SourceFd(&pidfd.as_raw_fd()));
        }
    }

    /// How it exited, if it did (reaping it).
    fn exited(&mut self) -> Option<Exit> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(Exit {
                shown: status.to_string(),
                ok: status.success(),
            }),
            Ok(None) => None,
            Err(e) => Some(Exit {
                shown: format!("status unknown: {e}"),
                ok: false,
            }),
        }
    }
}

/// How the new process ended, as the logs say it.
struct Exit {
    /// `exit status: 3`, `signal: 9 (SIGKILL)`, ...
    shown: String,
    /// It exited 0.
    ok: bool,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl<H: Handler<M>, M> Server<H, M> {
    /// On SIGUSR2, starts `program` (normally [`Program::current`], read at
    /// start) with the listening socket, and the metrics socket if any, by
    /// the socket-activation protocol, and hands over once it listens: the
    /// upgrade of the SPEC's "Zero-downtime upgrade". The new process must
    /// serve what it inherits, as a server with
    /// [`Config::systemd`](crate::Config::systemd) does. Like
    /// [`handle_signals`](Self::handle_signals), a process-wide choice for
    /// the embedding program to make; call it after that one.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the SIGUSR2 handler cannot be installed.
    pub fn handle_upgrades(&mut self, program: Program) -> Result<(), Error> {
        let target = || {
            format!(
                "the SIGUSR2 handler for {}",
                super::shown(&self.core.config)
            )
        };
        match &self.signals {
            Some(signals) => signals
                .add_signal(SIGUSR2)
                .map_err(|e| Error::io("install", target(), e))?,
            None => {
                let mut signals =
                    Signals::new([SIGUSR2]).map_err(|e| Error::io("install", target(), e))?;
                self.poll
                    .registry()
                    .register(&mut signals, SIGNALS, Interest::READABLE)
                    .map_err(|e| Error::io("register", target(), e))?;
                self.signals = Some(signals);
            }
        }
        self.upgrade.program = Some(program);
        Ok(())
    }

    /// SIGUSR2: start the new process, unless one is under way, the socket
    /// went to one already, or we are stopping.
    pub(super) fn on_sigusr2(&mut self, now: Instant) {
        let busy = match &self.upgrade.phase {
            _ if self.draining.is_some() => Some("shutting down".to_string()),
            Phase::Starting { new, .. } => Some(format!(
                "an upgrade is in progress (new process {})",
                new.child.id()
            )),
            Phase::HandedOver { .. } => {
                Some("this process handed its socket over already; signal the new one".into())
            }
            Phase::Idle => None,
        };
        match busy {
            Some(why) => warn!("SIGUSR2 ignored: {why}"),
            None => self.start_upgrade(now),
        }
    }

    fn start_upgrade(&mut self, now: Instant) {
        let (Some(program), Some(socket)) = (&self.upgrade.program, self.endpoint.socket()) else {
            return;
        };
        let mut sockets = vec![Handing {
            socket: socket.as_fd(),
            name: "main",
            file: self.file.as_ref().map(SocketFile::id),
            file_var: sys::SOCKET_FILE_VAR,
        }];
        if let Some(m) = &self.metrics {
            sockets.push(Handing {
                socket: m.listener().as_fd(),
                name: "metrics",
                file: m.file().map(SocketFile::id),
                file_var: sys::METRICS_FILE_VAR,
            });
        }
        let path = program.path.display().to_string();
        let spawned = sys::spawn_upgrade(&program.path, &program.arg0, &program.args, &sockets);
        let spawned = match spawned {
            Ok(s) => s,
            Err(e) => {
                error!("upgrade: cannot start {path}: {e}; still serving");
                return;
            }
        };
        let pid = spawned.child.id();
        let mut new = NewProcess {
            child: spawned.child,
            ready: Some(spawned.ready),
            pidfd: match sys::pidfd_open(pid) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    debug!("pidfd_open {pid}: {e}; its exit is noticed at the deadline");
                    None
                }
            },
        };
        if let Err(e) = watch(&new, self.poll.registry()) {
            self.end(&mut new);
            error!("upgrade: register the new process {pid}: {e}; killed it, still serving");
            return;
        }
        info!("upgrade: started {path} as process {pid}; waiting up to {LISTEN_WITHIN:?} for it to listen");
        self.upgrade.phase = Phase::Starting {
            new,
            deadline: now + LISTEN_WITHIN,
        };
    }

    /// The readiness channel or the pidfd of the new process is ready.
    pub(super) fn on_upgrade_event(&mut self, token: Token, now: Instant) {
        let registry = self.poll.registry();
        match &mut self.upgrade.phase {
            Phase::Starting { new, .. } => {
                if new.said_ready(registry) {
                    self.hand_over(now);
                } else if token == UPGRADE_CHILD {
                    if let Some(status) = new.exited() {
                        self.give_up(&format!("exited before listening ({status})"));
                    }
                }
            }
            Phase::HandedOver { new: slot, .. } if token == UPGRADE_CHILD => {
                let Some(new) = slot else {
                    return;
                };
                let Some(status) = new.exited() else {
                    return;
                };
                let (pid, addr) = (new.child.id(), super::shown(&self.core.config));
                // 0: it was stopped, or upgraded in turn; else it failed.
                if status.ok {
                    info!("upgrade: process {pid}, which took {addr} over, exited ({status})");
                } else {
                    error!("upgrade: process {pid}, which took {addr} over, exited ({status})");
                }
                new.close(registry);
                *slot = None;
            }
            _ => {}
        }
    }

    /// The new process listens: stop accepting (or reading datagrams),
    /// forget the socket files, and serve what is open.
    fn hand_over(&mut self, now: Instant) {
        let Phase::Starting { mut new, .. } = mem::replace(&mut self.upgrade.phase, Phase::Idle)
        else {
            return;
        };
        if let Some(status) = new.exited() {
            // Gone before we let go: keep the socket.
            self.upgrade.phase = Phase::Starting { new, deadline: now };
            return self.give_up(&format!("exited right after starting to listen ({status})"));
        }
        let registry = self.poll.registry();
        new.close_ready(registry);
        let (pid, n, drain) = (
            new.child.id(),
            self.endpoint.open(),
            self.core.config.drain_timeout,
        );
        let addr = super::shown(&self.core.config);
        match &mut self.endpoint {
            Endpoint::Connections(c) => {
                c.stop_listening(registry);
                info!("upgrade: process {pid} listens on {addr}; not accepting any more, serving {n} open connection{} for up to {drain:?}", plural(n));
            }
            Endpoint::Datagrams(d) => {
                d.stop_reading();
                info!("upgrade: process {pid} listens on {addr}; not reading any more, sending {n} queued repl{}", if n == 1 { "y" } else { "ies" });
            }
        }
        if let Some(file) = self.file.take() {
            file.release();
        }
        if let Some(m) = self.metrics.take() {
            m.hand_over();
        }
        self.upgrade.phase = Phase::HandedOver {
            since: now,
            new: Some(new),
        };
    }

    /// The new process failed (`why`): kill it if it still runs, one
    /// error line, and serve on as before.
    fn give_up(&mut self, why: &str) {
        let Phase::Starting { mut new, .. } = mem::replace(&mut self.upgrade.phase, Phase::Idle)
        else {
            return;
        };
        let killed = if self.end(&mut new) {
            "; killed it"
        } else {
            ""
        };
        error!(
            "upgrade: new process {} {why}{killed}; still serving {}",
            new.child.id(),
            super::shown(&self.core.config)
        );
    }

    /// Stops watching `new` and kills it if it still runs (only that pid,
    /// our child, not yet reaped, so not reused); whether it was killed.
    /// Under systemd we are the main process again, whatever it said.
    fn end(&self, new: &mut NewProcess) -> bool {
        new.close(self.poll.registry());
        let killed = new.exited().is_none() && {
            if let Err(e) = new.child.kill() {
                warn!("upgrade: kill process {}: {e}", new.child.id());
            }
            let _ = new.child.wait();
            true
        };
        if self.core.config.systemd {
            if let Err(e) = sys::notify(&format!("MAINPID={}", std::process::id())) {
                debug!("notify MAINPID: {e}");
            }
        }
        killed
    }

    /// When the upgrade needs the loop: the new process's deadline, or the
    /// end of the drain after a handover.
    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        match &self.upgrade.phase {
            Phase::Starting { deadline, .. } => Some(*deadline),
            Phase::HandedOver { since, .. } if self.draining.is_none() => {
                Some(*since + self.core.config.drain_timeout)
            }
            _ => None,
        }
    }

    /// The upgrade's turn: give up on a new process late to listen; once
    /// `--drain-timeout` has passed since the handover, stop as on SIGTERM.
    pub(super) fn upgrade_turn(&mut self, now: Instant) {
        match &mut self.upgrade.phase {
            Phase::Starting { new, deadline } if now >= *deadline => {
                let why = match new.exited() {
                    Some(status) => format!("exited before listening ({status})"),
                    None => format!("was not listening within {LISTEN_WITHIN:?}"),
                };
                self.give_up(&why);
            }
            Phase::HandedOver { since, .. }
                if self.draining.is_none() && now >= *since + self.core.config.drain_timeout =>
            {
                self.begin_shutdown(now);
            }
            _ => {}
        }
    }

    /// A stop while starting: hand over if the new process listens
    /// already, else kill it (it has accepted nothing) and stop as usual.
    pub(super) fn settle_upgrade(&mut self, now: Instant) {
        let Phase::Starting { new, .. } = &mut self.upgrade.phase else {
            return;
        };
        if new.said_ready(self.poll.registry()) {
            return self.hand_over(now);
        }
        let Phase::Starting { mut new, .. } = mem::replace(&mut self.upgrade.phase, Phase::Idle)
        else {
            return;
        };
        self.end(&mut new);
        warn!(
            "upgrade abandoned: stopping before new process {} listened; it was killed",
            new.child.id()
        );
    }
}

/// Registers the readiness channel and the pidfd of `new`.
fn watch(new: &NewProcess, registry: &Registry) -> io::Result<()> {
    if let Some(ready) = &new.ready {
        registry.register(
            &mut SourceFd(&ready.as_raw_fd()),
            UPGRADE_READY,
            Interest::READABLE,
        )?;
    }
    if let Some(pidfd) = &new.pidfd {
        registry.register(
            &mut SourceFd(&pidfd.as_raw_fd()),
            UPGRADE_CHILD,
            Interest::READABLE,
        )?;
    }
    Ok(())
}
