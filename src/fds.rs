//! Descriptor passing (`SCM_RIGHTS`): sending open files over a Unix
//! socket, the one thing only Unix sockets can do.
//!
//! The functions here are the safe calls the server itself uses, public so
//! that a client (or a test) can speak to it: [`send_with_fds`] attaches
//! descriptors to bytes or a message, [`recv_with_fds`] takes them in,
//! close-on-exec, as owned values (dropping one closes it).
//!
//! On a stream, descriptors travel with a byte: the kernel hands them to
//! the read that takes the first byte of the `sendmsg` they came with, and
//! a read never goes past that write's bytes. (It may begin with bytes
//! sent before them, without descriptors.) On seqpacket and dgram they
//! travel with the message.
//!
//! # Examples
//!
//! Pass one end of a second socket pair over the first, and talk through
//! the copy that arrives:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::fd::AsFd;
//! use std::os::unix::net::UnixStream;
//!
//! let (a, b) = UnixStream::pair()?;
//! let (mine, theirs) = UnixStream::pair()?;
//! uds_reactor::fds::send_with_fds(&a, b"here", &[theirs.as_fd()])?;
//! drop(theirs);
//!
//! let (mut buf, mut fds) = ([0; 16], Vec::new());
//! let got = uds_reactor::fds::recv_with_fds(&b, &mut buf, 4, &mut fds)?;
//! assert_eq!((&buf[..got.len], fds.len(), got.fds_lost), (&b"here"[..], 1, false));
//! let mut passed = UnixStream::from(fds.pop().unwrap());
//! passed.write_all(b"through the passed socket")?;
//! drop(passed);
//! let mut s = String::new();
//! (&mine).read_to_string(&mut s)?;
//! assert_eq!(s, "through the passed socket");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use socket2::SockAddr;

use crate::sys;

pub use crate::sys::{RecvFds, MAX_FDS};

/// Sends `bytes` (one message on seqpacket and dgram sockets) with `fds`
/// attached (they stay open here: the receiver gets its own copies; any
/// descriptor type will do: `OwnedFd`, `File`, `BorrowedFd`, ...). On a
/// stream any `Ok(n)` with `n > 0` sent every descriptor; a short write
/// leaves only bytes to send. `SIGPIPE` is never raised (`MSG_NOSIGNAL`).
///
/// # Errors
///
/// `sendmsg`'s error; `InvalidInput` for more than [`MAX_FDS`]
/// descriptors.
pub fn send_with_fds<F: AsFd>(sock: impl AsFd, bytes: &[u8], fds: &[F]) -> io::Result<usize> {
    sys::send_fds(sock.as_fd(), bytes, fds, None)
}

/// As [`send_with_fds`], to address `to` (an unconnected datagram socket).
///
/// # Errors
///
/// As [`send_with_fds`].
pub fn send_to_with_fds<F: AsFd>(
    sock: impl AsFd,
    bytes: &[u8],
    fds: &[F],
    to: &SockAddr,
) -> io::Result<usize> {
    sys::send_fds(sock.as_fd(), bytes, fds, Some(to))
}

/// Receives into `buf` (one message on seqpacket and dgram sockets) with
/// room for `max_fds` descriptors, appended to `fds`. The kernel rounds
/// the room up, so a few more than `max_fds` may arrive: check the count.
/// [`RecvFds::fds_lost`] says the kernel dropped some (more were sent than
/// fit, or this process is out of descriptors).
///
/// # Errors
///
/// `recvmsg`'s error (`WouldBlock` on a nonblocking socket with nothing
/// queued).
pub fn recv_with_fds(
    sock: impl AsFd,
    buf: &mut [u8],
    max_fds: usize,
    fds: &mut Vec<OwnedFd>,
) -> io::Result<RecvFds> {
    sys::recv_fds(sock.as_fd(), buf, max_fds, fds)
}

/// Moves every descriptor of `from` to the end of `into`, leaving `from`
/// empty: a swap of the two vectors when `into` is empty (the common case
/// on the echo path: no copy; the two allocations trade places), else an
/// append.
#[inline]
pub(crate) fn move_all(into: &mut Vec<OwnedFd>, from: &mut Vec<OwnedFd>) {
    if into.is_empty() {
        std::mem::swap(into, from);
    } else {
        into.append(from);
    }
}

/// Descriptors attached to queued output, each set at the place it goes
/// with: for bytes and message records, the number of output bytes ahead
/// of it; for datagrams, the number of datagrams ahead of it. Places
/// count from the head of the output, so they shrink as it is written.
/// The descriptors themselves lie back to back in one vector, so that
/// steady traffic allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Attached {
    /// `(place, how many of fds)`, places ascending and distinct.
    sets: VecDeque<(usize, usize)>,
    /// Every set's descriptors, in order.
    fds: Vec<OwnedFd>,
}

impl Attached {
    /// Attaches the descriptors of `fds` at `place` (at or after every
    /// place so far), taking them out of it (its allocation stays).
    pub(crate) fn attach(&mut self, place: usize, fds: &mut Vec<OwnedFd>) {
        if fds.is_empty() {
            return;
        }
        let n = fds.len();
        self.fds.append(fds);
        match self.sets.back_mut() {
            Some((last, count)) if *last == place => *count += n,
            _ => {
                debug_assert!(self.sets.back().is_none_or(|(last, _)| *last < place));
                self.sets.push_back((place, n));
            }
        }
    }

    /// The descriptors that go with the head of the output (place 0).
    pub(crate) fn at_head(&self) -> &[OwnedFd] {
        match self.sets.front() {
            Some(&(0, n)) => &self.fds[..n],
            _ => &[],
        }
    }

    /// How far a write from the head may go before it would reach the
    /// next place with descriptors (`None`: no limit).
    pub(crate) fn run(&self) -> Option<usize> {
        let mut places = self.sets.iter().map(|(place, _)| *place);
        match places.next() {
            Some(0) => places.next(),
            other => other,
        }
    }

    /// `n` (> 0) bytes or datagrams from the head are gone, written (the
    /// descriptors at the head went with them) or dropped. Returns how
    /// many descriptors that let go of (closing this side's copies).
    pub(crate) fn advance(&mut self, n: usize) -> usize {
        let mut gone = 0;
        while let Some(&(place, count)) = self.sets.front() {
            if place >= n {
                break;
            }
            self.sets.pop_front();
            gone += count;
        }
        for (place, _) in &mut self.sets {
            *place -= n;
        }
        self.fds.drain(..gone);
        gone
    }

    /// Descriptors held.
    pub(crate) fn held(&self) -> usize {
        self.fds.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(n: usize) -> Vec<OwnedFd> {
        let null = std::fs::File::open("/dev/null").expect("open");
        (0..n)
            .map(|_| OwnedFd::from(null.try_clone().expect("dup")))
            .collect()
    }

    #[test]
    fn attachments_bound_writes_and_go_with_the_head() {
        let mut a = Attached::default();
        for (place, n) in [(0, 1), (5, 2), (5, 1), (9, 1)] {
            let mut set = fds(n);
            a.attach(place, &mut set);
            assert!(set.is_empty(), "taken out");
        }
        assert_eq!((a.held(), a.at_head().len(), a.run()), (5, 1, Some(5)));
        // A write of 3 from the head takes the first set.
        assert_eq!(a.advance(3), 1);
        assert_eq!((a.at_head().len(), a.run()), (0, Some(2)));
        assert_eq!(a.advance(2), 0);
        assert_eq!((a.at_head().len(), a.run()), (3, Some(4)));
        assert_eq!(a.advance(10), 4);
        assert_eq!((a.held(), a.run()), (0, None));
    }
}
