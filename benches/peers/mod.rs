//! The servers uds-reactor is compared with, each run in a child process
//! of the bench (`echo --peer NAME PATH`), so that /proc/PID/stat and
//! VmRSS are that server's alone.

pub mod epoll;
pub mod epoll_dgram;
pub mod epoll_fds;
pub mod epoll_seqpacket;
pub mod threads;
pub mod tokio_ct;
pub mod tokio_dgram;

use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;

/// Size of the read buffer of the tokio and thread peers (per task, per
/// thread); raw-epoll has its own.
pub const BUF: usize = 64 << 10;

/// If this process was started as a peer (`--peer NAME PATH`, as
/// procs.rs starts them), serves as that peer until killed; otherwise
/// returns (`cargo bench` passes `--bench`, which is ignored).
pub fn serve_if_asked() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, name, path] = &args[..] {
        if flag == "--peer" {
            serve(name, Path::new(path));
            std::process::exit(0);
        }
    }
}

/// Binds `path` and serves echo on it with the peer `name` until killed.
///
/// # Panics
///
/// On an unknown name or a failed bind: the parent sees the child exit.
pub fn serve(name: &str, path: &Path) {
    // Thousands of idle connections need descriptors.
    let _ = uds_reactor::raise_open_file_limit();
    let stream = || UnixListener::bind(path).expect("bind peer socket");
    let dgram = || UnixDatagram::bind(path).expect("bind peer socket");
    match name {
        "tokio-ct" => tokio_ct::serve(stream()),
        "std-threads" => threads::serve(stream()),
        "raw-epoll" => epoll::serve(stream()),
        "raw-epoll-fds" => epoll_fds::serve(stream()),
        "raw-epoll-seqpacket" => epoll_seqpacket::serve(path),
        "raw-epoll-dgram" => epoll_dgram::serve(dgram()),
        "tokio-dgram" => tokio_dgram::serve(dgram()),
        other => panic!("unknown peer {other}"),
    }
}
