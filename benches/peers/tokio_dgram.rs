//! tokio's `current_thread` runtime on a datagram socket: one task,
//! `recv_from` then `send_to` back to the sender's path, one buffer as
//! large as uds-reactor's default `--max-frame` (1 MiB). The idiomatic
//! async datagram echo.
//!
//! Datagrams from unbound senders (no path to answer) are dropped, as
//! uds-reactor drops them. A reply that would block waits in `send_to`
//! for the socket to be writable (nothing is read meanwhile): that comes
//! when senders read the replies filling its send buffer, though never
//! for a full queue of an unconnected receiver (the bench has none: its
//! senders are connected to the server).

use std::os::unix::net::UnixDatagram;

/// uds-reactor's default `--max-frame`: the longest datagram answered.
const MAX_DATAGRAM: usize = 1 << 20;

/// Serves on the bound socket `sock` until the process is killed.
pub fn serve(sock: UnixDatagram) {
    sock.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let sock = tokio::net::UnixDatagram::from_std(sock).expect("register socket");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            if let Some(path) = from.as_pathname() {
                let _ = sock.send_to(&buf[..n], path).await;
            }
        }
    });
}
