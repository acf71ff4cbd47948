//! The socket-file protocol (see the [`sys`](super) docs), group lookup
//! and Unix addresses.

use std::ffi::CString;
use std::fs::{self, File, Permissions};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use super::{cvt, new_socket, retry, Bound, FileId};
use crate::config::{Address, Config, Group, SocketType};
use crate::error::Error;
use std::path::PathBuf;

/// How long [`bind`] and [`remove_socket_file`] wait for the directory lock.
/// Holders keep it for a few syscalls; far longer means someone else holds
/// it for other reasons.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Creates the socket `config` describes and binds it, following the
/// socket-file protocol in the [`sys`](super) docs for paths.
///
/// # Errors
///
/// - [`Error::Config`]: no address, an empty path or one with a NUL byte;
/// - [`Error::PathTooLong`]: the address does not fit in `sun_path`;
/// - [`Error::NoParent`]: the parent directory does not exist;
/// - [`Error::NotSocket`]: the path exists and is not a socket;
/// - [`Error::InUse`]: a live socket is there (or won the race to bind);
/// - [`Error::Io`] with step `stat`, `connect`, `unlink`, `resolve group`,
///   `socket`, `bind`, `chmod`, `chown` or `listen`. After a failure past
///   `bind` the file just created is removed again.
pub fn bind(config: &Config) -> Result<Bound, Error> {
    let address = config
        .address
        .as_ref()
        .ok_or_else(|| Error::Config("no address to bind to".into()))?;
    let addr = address.to_sock_addr()?;
    let path = match address {
        Address::Path(path) => path,
        Address::Abstract(_) => {
            let socket =
                new_socket(config.socket_type).map_err(|e| Error::io("socket", address, e))?;
            socket.bind(&addr).map_err(|e| bind_error(address, e))?;
            listen(&socket, config).map_err(|e| Error::io("listen", address, e))?;
            return Ok(Bound { socket, file: None });
        }
    };
    let shown = path.display();
    let dir = parent_dir(path);
    check_parent(dir, path)?;
    // Resolve before creating anything, so a bad name leaves nothing behind.
    let gid = config
        .group
        .as_ref()
        .map(|group| {
            // The target names the path too: a runtime error names the path.
            resolve_group(group).map_err(|e| {
                let target = format!("{} for {shown}", group_name(group));
                Error::io("resolve group", target, e)
            })
        })
        .transpose()?;
    let _lock = lock_dir(dir);
    clear_stale(path, &addr, config.socket_type)?;
    let socket = new_socket(config.socket_type).map_err(|e| Error::io("socket", &shown, e))?;
    // The file bind creates gets the socket inode's mode less the umask:
    // narrowed first, it is never wider than --mode, not for an instant.
    let socket = fchmod(socket, config.mode).map_err(|e| Error::io("fchmod", &shown, e))?;
    socket.bind(&addr).map_err(|e| bind_error(&shown, e))?;
    let id = match file_id(path) {
        Ok(id) => id,
        Err(e) => {
            let _ = fs::remove_file(path);
            return Err(Error::io("stat", &shown, e));
        }
    };
    if let Err(e) = restrict_and_listen(path, &socket, config, gid) {
        let _ = remove_if_ours(path, id);
        return Err(e);
    }
    let file = SocketFile {
        path: path.to_path_buf(),
        id,
    };
    Ok(Bound {
        socket,
        file: Some(file),
    })
}

/// [`Error::NoParent`] unless `dir`, the directory of `path`, exists.
fn check_parent(dir: &Path, path: &Path) -> Result<(), Error> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(Error::NoParent(path.display().to_string())),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Err(Error::NoParent(path.display().to_string()))
        }
        _ => Ok(()), // exists, or unreadable: bind will say what is wrong
    }
}

/// Sets the mode of the socket's own inode (`fchmod`), through `File`,
/// whose `set_permissions` is `fchmod` on its descriptor.
fn fchmod(socket: Socket, mode: u32) -> io::Result<Socket> {
    let file = File::from(std::os::fd::OwnedFd::from(socket));
    let res = file.set_permissions(Permissions::from_mode(mode));
    let socket = Socket::from(std::os::fd::OwnedFd::from(file));
    res.map(|()| socket)
}

/// The socket file a server created: removed when dropped, but only if the
/// path still names the same file (device and inode), so a newer server's
/// socket is left alone.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    id: FileId,
}

impl SocketFile {
    /// The device and inode it had when created.
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Takes ownership of the socket file at `path` that another process
    /// created and handed over with its socket (an upgrade), if `path`
    /// still names that file (`id`); `None` if it does not.
    pub fn adopt(path: &Path, id: FileId) -> Option<SocketFile> {
        match file_id(path) {
            Ok(found) if found == id => Some(SocketFile {
                path: path.to_path_buf(),
                id,
            }),
            _ => {
                log::info!(
                    "{} is no longer the socket file handed over: leaving it alone at exit",
                    path.display()
                );
                None
            }
        }
    }

    /// Gives the file up without removing it: its socket went to another
    /// process (an upgrade), which owns the file now.
    pub fn release(mut self) {
        let path = std::mem::take(&mut self.path);
        // Nothing is left in it to free: the path was taken.
        std::mem::forget(self);
        log::debug!("{} is the new process's now", path.display());
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let shown = self.path.display();
        match remove_socket_file(&self.path, self.id) {
            Ok(true) => log::debug!("removed {shown}"),
            Ok(false) => log::info!("left {shown} alone: it is no longer our socket"),
            Err(e) => log::warn!("remove {shown}: {e}"),
        }
    }
}

/// Step 4 and 5 of the protocol: exact mode and group, then `listen`.
fn restrict_and_listen(
    path: &Path,
    socket: &Socket,
    config: &Config,
    gid: Option<u32>,
) -> Result<(), Error> {
    let shown = path.display();
    fs::set_permissions(path, Permissions::from_mode(config.mode))
        .map_err(|e| Error::io("chmod", &shown, e))?;
    if let Some(gid) = gid {
        // lchown: the path is our socket; never follow a symlink put in its place.
        std::os::unix::fs::lchown(path, None, Some(gid))
            .map_err(|e| Error::io("chown", &shown, e))?;
    }
    listen(socket, config).map_err(|e| Error::io("listen", &shown, e))
}

/// Removes a socket file found at `path` if nobody is listening on it.
fn clear_stale(path: &Path, addr: &SockAddr, ty: SocketType) -> Result<(), Error> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("stat", &shown, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::NotSocket(shown.to_string()));
    }
    // Nonblocking: a live listener with a full backlog answers EAGAIN at
    // once instead of making us wait for room.
    let probe = new_socket(ty).map_err(|e| Error::io("socket", &shown, e))?;
    match retry(|| probe.connect(addr)) {
        Ok(()) => Err(Error::InUse(shown.to_string())),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            remove_if_ours(path, id).map_err(|e| Error::io("unlink", &shown, e))?;
            Ok(())
        }
        // EPROTOTYPE: a live socket of another type is bound there.
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(libc::EPROTOTYPE) =>
        {
            Err(Error::InUse(shown.to_string()))
        }
        Err(e) => Err(Error::io("connect", &shown, e)),
    }
}

/// Removes the socket file at `path` if it is still the one `id` names
/// (what dropping a [`SocketFile`] does).
///
/// Runs under the same directory lock as [`bind`]. Returns `Ok(true)` if the
/// file was removed, `Ok(false)` if it is missing or is not ours any more (a
/// newer server's socket is left alone).
///
/// # Errors
///
/// The `lstat` or `unlink` error, other than "not found".
fn remove_socket_file(path: &Path, id: FileId) -> io::Result<bool> {
    let _lock = lock_dir(parent_dir(path));
    remove_if_ours(path, id)
}

/// [`remove_socket_file`] without the lock (for callers holding it already:
/// a second `flock` from this process on a new descriptor would deadlock).
fn remove_if_ours(path: &Path, id: FileId) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta)
            if meta.file_type().is_socket() && meta.dev() == id.dev && meta.ino() == id.ino =>
        {
            match fs::remove_file(path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => Path::new("."),
        Some(dir) => dir,
        None => Path::new("/"),
    }
}

/// Takes an exclusive `flock` on `dir`, held until the file is dropped.
///
/// `None` if the directory cannot be opened or locked, or the lock is not
/// free within [`LOCK_WAIT`] (anyone who can open a shared directory such
/// as `/tmp` can hold it): we then go on unserialised rather than hang or
/// refuse to start.
fn lock_dir(dir: &Path) -> Option<File> {
    let file = File::open(dir).ok()?;
    let start = Instant::now();
    loop {
        // SAFETY: flock only takes a descriptor, which `file` owns and keeps
        // open for the call.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let e = match cvt(rc) {
            Ok(_) => return Some(file),
            Err(e) => e,
        };
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock if start.elapsed() < LOCK_WAIT => {
                thread::sleep(Duration::from_millis(2));
            }
            _ => {
                log::warn!("going on without the lock on {}: {e}", dir.display());
                return None;
            }
        }
    }
}

fn file_id(path: &Path) -> io::Result<FileId> {
    let meta = fs::symlink_metadata(path)?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

fn bind_error(target: impl std::fmt::Display, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::InUse(target.to_string()),
        _ => Error::io("bind", target, e),
    }
}

fn listen(socket: &Socket, config: &Config) -> io::Result<()> {
    match config.socket_type {
        SocketType::Dgram => Ok(()),
        _ => socket.listen(config.backlog),
    }
}

fn group_name(group: &Group) -> String {
    match group {
        Group::Id(gid) => gid.to_string(),
        Group::Name(name) => name.clone(),
    }
}

/// The address a socket is bound to, if it is a named Unix address.
pub fn local_address(sock: &Socket) -> Option<Address> {
    let addr = sock.local_addr().ok()?;
    if let Some(path) = addr.as_pathname() {
        return Some(Address::Path(path.to_path_buf()));
    }
    addr.as_abstract_namespace()
        .map(|name| Address::Abstract(name.to_vec()))
}

/// The gid of a group: an id as is, a name looked up with `getgrnam_r`.
///
/// # Errors
///
/// [`io::ErrorKind::NotFound`] ("no such group 'name'") for an unknown
/// name; the lookup's own error otherwise (an NSS failure, say).
pub fn resolve_group(group: &Group) -> io::Result<u32> {
    const MAX_BUF: usize = 1 << 20;
    let name = match group {
        Group::Id(gid) => return Ok(*gid),
        Group::Name(name) => name,
    };
    let not_found = || io::Error::new(io::ErrorKind::NotFound, format!("no such group '{name}'"));
    let c_name = CString::new(name.as_str()).map_err(|_| not_found())?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        let mut entry = MaybeUninit::<libc::group>::uninit();
        let mut result: *mut libc::group = ptr::null_mut();
        // SAFETY: the name is NUL-terminated, `entry` and `result` are
        // writable, and `buf` is writable for the length passed.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                entry.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match rc {
            // SAFETY: on success a non-null `result` points to `entry`,
            // filled in by getgrnam_r.
            0 if !result.is_null() => return Ok(unsafe { (*result).gr_gid }),
            0 | libc::ENOENT => return Err(not_found()),
            libc::ERANGE if buf.len() < MAX_BUF => buf.resize(buf.len() * 2, 0),
            libc::EINTR => {}
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}
