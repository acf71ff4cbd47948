//! tokio's `current_thread` runtime: one task per connection, each with its
//! own 64 KiB buffer, `read` then `write_all`. The idiomatic async server.

use std::os::unix::net::UnixListener;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::BUF;

/// Serves until the process is killed.
pub fn serve(listener: UnixListener) {
    listener.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener).expect("register listener");
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; BUF];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if sock.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}
