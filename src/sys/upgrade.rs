//! Starting the new process of a binary upgrade: the listening sockets go
//! to it by the socket-activation protocol, with `LISTEN_PID` set to its
//! own pid, and a readiness channel beside them.
//!
//! ```text
//! old process                         new process (after fork, before exec)
//! socketpair(ready_ours, ready_theirs)
//! dup sockets above 3+n (cloexec)
//! build argv, envp (LISTEN_PID=____)
//! fork ─────────────────────────────> dup2 socket copies onto 3..3+n,
//!                                     ready_theirs onto 3+n (not cloexec)
//!                                     getpid() -> digits into LISTEN_PID=
//!                                     execve(program, argv, envp)
//! close the copies and ready_theirs
//! wait for one byte on ready_ours     ... "listening on", then one byte
//! ```
//!
//! `LISTEN_PID` must be the child's pid, which nobody knows before the
//! fork. `setenv` after the fork is not async-signal-safe (it allocates and
//! takes a lock another thread may have held at the fork), so the whole
//! environment is built before: the `LISTEN_PID=` entry is a buffer with
//! room for the digits, which the child fills with `getpid()` and then
//! `execve`s with that environment itself. Between fork and exec it calls
//! only `dup2`, `getpid` and `execve` and writes into memory allocated
//! before the fork. std's `Command` still does the fork, reports a failed
//! `execve` back as the error of `spawn`, and gives a `Child` to wait for
//! and kill.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::ptr;

use socket2::{Domain, Socket, Type};

use super::{cvt, FileId};

/// The descriptor the readiness channel's write end gets in the new
/// process (after its sockets); `UDS_REACTOR_READY_FD` names it.
pub const READY_FD_VAR: &str = "UDS_REACTOR_READY_FD";
/// `dev:ino` of the main socket's file, which the new process owns now.
pub const SOCKET_FILE_VAR: &str = "UDS_REACTOR_SOCKET_FILE";
/// `dev:ino` of the metrics socket's file.
pub const METRICS_FILE_VAR: &str = "UDS_REACTOR_METRICS_FILE";

/// The variables this module sets: any inherited value is dropped first.
const OWN_VARS: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    READY_FD_VAR,
    SOCKET_FILE_VAR,
    METRICS_FILE_VAR,
];

const LISTEN_PID: &[u8] = b"LISTEN_PID=";

/// One socket handed to the new process.
#[derive(Debug)]
pub struct Handing<'a> {
    /// The socket; the new process gets it as descriptor 3, 4, ...
    pub socket: BorrowedFd<'a>,
    /// Its name in `LISTEN_FDNAMES` (`main`, `metrics`).
    pub name: &'static str,
    /// The socket file it is bound to, if ours (passed on so the new
    /// process can check it is still that file before owning it).
    pub file: Option<FileId>,
    /// The variable that carries `file`.
    pub file_var: &'static str,
}

/// A new process, started.
#[derive(Debug)]
pub struct Spawned {
    pub child: Child,
    /// Our end of the readiness channel, nonblocking: one byte once the
    /// new process listens; EOF if it closed its end without.
    pub ready: Socket,
}

/// Starts `program` with `arg0` and `args`, handing it `sockets` as
/// descriptors 3.. with `LISTEN_FDS`, `LISTEN_FDNAMES` and its own pid in
/// `LISTEN_PID`, and the write end of a readiness channel as the next
/// descriptor, named by `UDS_REACTOR_READY_FD`. The environment is ours
/// otherwise, less a `WATCHDOG_PID` naming us (the new process is the one
/// to ping). Nothing else is inherited: every other descriptor of ours is
/// close-on-exec.
///
/// # Errors
///
/// Making the channel or the descriptor copies, a NUL byte in an argument,
/// or the fork or `execve` failing (`ENOENT`, `EACCES`, `ENOEXEC`, ...).
pub fn spawn_upgrade(
    program: &Path,
    arg0: &OsStr,
    args: &[OsString],
    sockets: &[Handing<'_>],
) -> io::Result<Spawned> {
    let (ours, theirs) = Socket::pair(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    ours.set_nonblocking(true)?;
    let n = sockets.len() as RawFd;
    // Copies above every target (3..=3+n), so no dup2 onto a target
    // clobbers a source still to be moved. Close-on-exec: the targets are
    // the only descriptors the new process keeps.
    let copies = sockets
        .iter()
        .map(|s| dup_above(s.socket, 4 + n))
        .collect::<io::Result<Vec<_>>>()?;
    let their_end = dup_above(theirs.as_fd(), 4 + n)?;
    drop(theirs);
    let mut moves: Vec<(RawFd, RawFd)> = copies
        .iter()
        .enumerate()
        .map(|(i, fd)| (fd.as_raw_fd(), 3 + i as RawFd))
        .collect();
    moves.push((their_end.as_raw_fd(), 3 + n));

    let mut vars = Vec::new();
    let me = std::process::id().to_string();
    for (key, value) in std::env::vars_os() {
        let ours = OWN_VARS.iter().any(|v| key == *v);
        if ours || (key == "WATCHDOG_PID" && value == *me) {
            continue;
        }
        vars.push(pair(key.as_bytes(), value.as_bytes())?);
    }
    let names: Vec<&str> = sockets.iter().map(|s| s.name).collect();
    vars.push(pair(b"LISTEN_FDS", n.to_string().as_bytes())?);
    vars.push(pair(b"LISTEN_FDNAMES", names.join(":").as_bytes())?);
    vars.push(pair(
        READY_FD_VAR.as_bytes(),
        (3 + n).to_string().as_bytes(),
    )?);
    for s in sockets {
        if let Some(id) = s.file {
            let value = format!("{}:{}", id.dev, id.ino);
            vars.push(pair(s.file_var.as_bytes(), value.as_bytes())?);
        }
    }
    let mut argv = vec![c_string(arg0.as_bytes())?];
    for arg in args {
        argv.push(c_string(arg.as_bytes())?);
    }
    let mut exec = Exec::new(c_string(program.as_os_str().as_bytes())?, argv, vars);
    exec.moves = moves;

    let mut cmd = Command::new(program);
    cmd.arg0(arg0).args(args);
    // SAFETY: the closure runs in the forked child, where only
    // async-signal-safe calls are allowed: it calls dup2, getpid and
    // execve, and writes digits into a buffer allocated before the fork
    // (`Exec`); it allocates nothing and takes no lock. The descriptors it
    // moves are open: `copies` and `their_end` live until `spawn` returns.
    unsafe {
        cmd.pre_exec(move || exec.run());
    }
    let child = cmd.spawn()?;
    drop(copies);
    drop(their_end);
    Ok(Spawned { child, ready: ours })
}

/// A pidfd for `pid` (Linux 5.3+): readable once the process exits.
///
/// # Errors
///
/// `pidfd_open`'s error (`ENOSYS` on older kernels, `ESRCH`).
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor (close-on-exec) or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A close-on-exec copy of `fd` numbered `min` or above.
fn dup_above(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC only reads the borrowed (so open) descriptor
    // and returns a new one or -1.
    let copy = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fcntl just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "an argument contains a NUL byte",
        )
    })
}

fn pair(key: &[u8], value: &[u8]) -> io::Result<CString> {
    c_string(&[key, b"=", value].concat())
}

/// Everything the child needs between fork and exec, allocated before.
struct Exec {
    program: CString,
    /// Owned here; `argv_ptrs` and `envp_ptrs` point into them.
    _argv: Vec<CString>,
    _vars: Vec<CString>,
    /// `LISTEN_PID=` and room for the digits and a NUL.
    _pid_entry: Box<[u8]>,
    /// Where the digits go, derived once from `_pid_entry`'s buffer.
    digits: *mut u8,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    /// `(from, to)`: dup2 each before exec.
    moves: Vec<(RawFd, RawFd)>,
}

// SAFETY: the raw pointers point into buffers owned by the same `Exec`,
// which never reallocates them; they are only dereferenced in the forked
// child, by `run`, which has the only copy of the process's memory there.
unsafe impl Send for Exec {}
// SAFETY: as for Send; `run` takes `&mut self`, so no two threads use one
// `Exec` at once.
unsafe impl Sync for Exec {}

impl Exec {
    fn new(program: CString, argv: Vec<CString>, vars: Vec<CString>) -> Exec {
        // 10 digits hold any pid (at most 2^22 on Linux), then the NUL.
        let mut pid_entry = [LISTEN_PID, &[0; 11]].concat().into_boxed_slice();
        let entry = pid_entry.as_mut_ptr();
        // SAFETY: LISTEN_PID.len() is within the buffer just made.
        let digits = unsafe { entry.add(LISTEN_PID.len()) };
        let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(ptr::null());
        let mut envp_ptrs: Vec<_> = vars.iter().map(|v| v.as_ptr()).collect();
        envp_ptrs.push(entry.cast_const().cast());
        envp_ptrs.push(ptr::null());
        Exec {
            program,
            _argv: argv,
            _vars: vars,
            _pid_entry: pid_entry,
            digits,
            argv_ptrs,
            envp_ptrs,
            moves: Vec::new(),
        }
    }

    /// In the forked child: move the descriptors, write our pid, exec.
    /// Returns only on failure.
    fn run(&mut self) -> io::Result<()> {
        for &(from, to) in &self.moves {
            // SAFETY: dup2 on descriptors open in this process (see
            // spawn_upgrade); the target loses close-on-exec, as wanted.
            if unsafe { libc::dup2(from, to) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: getpid cannot fail and touches no memory.
        let pid = unsafe { libc::getpid() } as u32;
        let mut buf = [0u8; 10];
        let mut len = 0;
        let mut rest = pid;
        loop {
            buf[len] = b'0' + (rest % 10) as u8;
            len += 1;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        for i in 0..len {
            // SAFETY: `digits` has room for 10 digits and a NUL (Exec::new),
            // and `len` is at most 10; the NUL after them was written then.
            unsafe { self.digits.add(i).write(buf[len - 1 - i]) };
        }
        // SAFETY: program, argv and envp are NUL-terminated strings in
        // null-terminated arrays, all alive in `self`.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            )
        };
        Err(io::Error::last_os_error())
    }
}
