//! The handle other threads hold: stop the server, read its counters,
//! send its handler messages (a bounded queue and the loop's waker).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use log::warn;
use mio::Waker;

use crate::stats::{SharedStats, Stats};

/// What other threads share with the running server.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) stop: AtomicBool,
    pub(super) waker: Waker,
    pub(super) stats: SharedStats,
}

/// Stops a server, reads its counters and sends its handler messages,
/// from any thread.
///
/// `Send + Clone` (and `Sync`); built on a `mio::Waker`, so
/// [`stop`](Self::stop) and [`send`](Self::send) wake the server at once.
#[derive(Debug)]
pub struct Handle<M = ()> {
    pub(super) shared: Arc<Shared>,
    pub(super) messages: SyncSender<M>,
}

impl<M> Clone for Handle<M> {
    fn clone(&self) -> Self {
        Handle {
            shared: Arc::clone(&self.shared),
            messages: self.messages.clone(),
        }
    }
}

/// Why [`Handle::send`] could not hand a message over; the message comes
/// back.
#[derive(PartialEq, Eq)]
pub enum MessageError<M> {
    /// The queue holds [`Config::message_queue`](crate::Config::message_queue) messages the loop has
    /// not taken yet: try again later, or drop it.
    Full(M),
    /// The server has stopped running.
    Stopped(M),
}

impl<M> fmt::Debug for MessageError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageError::Full(_) => "Full(..)",
            MessageError::Stopped(_) => "Stopped(..)",
        })
    }
}

impl<M> fmt::Display for MessageError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MessageError::Full(_) => "the server's message queue is full",
            MessageError::Stopped(_) => "the server has stopped",
        })
    }
}

impl<M> std::error::Error for MessageError<M> {}

impl<M> Handle<M> {
    /// Hands `message` to the loop, which passes it to
    /// [`Handler::message`](crate::Handler::message) on its own thread, in the order sent. Never
    /// blocks: the queue is bounded ([`Config::message_queue`](crate::Config::message_queue)).
    ///
    /// # Errors
    ///
    /// [`MessageError::Full`] when the queue is full (memory stays bounded
    /// whatever a producer does), [`MessageError::Stopped`] once the
    /// server's `run` has returned; the message is given back.
    ///
    /// # Examples
    ///
    /// ```
    /// use uds_reactor::{Config, Context, Ctl, Frame, Handler, Server};
    ///
    /// /// Counts the numbers other threads send.
    /// struct Sum(u64);
    ///
    /// impl Handler<u64> for Sum {
    ///     type State = ();
    ///     fn open(&mut self, _: &mut Context<'_>) {}
    ///     fn frame(&mut self, _: &mut (), _: Frame<'_>, _: &mut Context<'_>) {}
    ///     fn message(&mut self, n: u64, _: &mut Ctl<'_>) {
    ///         self.0 += n;
    ///     }
    /// }
    ///
    /// let path = std::env::temp_dir().join(format!("sum-doc-{}.sock", std::process::id()));
    /// let server = Server::with_handler(Config::new(&path), Sum(0))?;
    /// let handle = server.handle();
    /// let thread = std::thread::spawn(move || server.run_handler());
    /// for n in 1..=10 {
    ///     handle.send(n).expect("room in the queue");
    /// }
    /// handle.stop();
    /// let (stats, Sum(total)) = thread.join().unwrap();
    /// stats?;
    /// assert_eq!(total, 55, "every message sent before stop arrives");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send(&self, message: M) -> Result<(), MessageError<M>> {
        match self.messages.try_send(message) {
            Ok(()) => {
                if let Err(e) = self.shared.waker.wake() {
                    warn!("cannot wake the server for a message: {e}");
                }
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(MessageError::Full(m)),
            Err(TrySendError::Disconnected(m)) => Err(MessageError::Stopped(m)),
        }
    }

    /// Asks the server to shut down as on SIGTERM: stop accepting, remove
    /// the socket file, flush for up to the drain timeout, return.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.waker.wake() {
            warn!("cannot wake the server to stop it: {e}");
        }
    }

    /// The counters as of the server's last loop turn.
    pub fn stats(&self) -> Stats {
        self.shared.stats.load()
    }
}
