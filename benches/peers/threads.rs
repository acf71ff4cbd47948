//! Thread per connection on std's blocking sockets: `read` then
//! `write_all` with a 64 KiB buffer per thread. The simplest server.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::thread;

use super::BUF;

/// Stack per connection thread: the buffer lives on the heap, so the
/// stack needs little; std's 2 MiB default would only cost address space.
const STACK: usize = 128 << 10;

/// Serves until the process is killed.
pub fn serve(listener: UnixListener) {
    for sock in listener.incoming() {
        let Ok(sock) = sock else { continue };
        // Out of threads: the connection is dropped, as such a server would.
        let _ = thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || echo(sock));
    }
}

fn echo(mut sock: UnixStream) {
    let mut buf = vec![0u8; BUF];
    loop {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if sock.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
