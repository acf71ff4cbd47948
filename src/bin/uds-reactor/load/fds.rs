//! `--fds K`: the open files a run attaches to every message, and the
//! check that the descriptors coming back refer to them.
//!
//! The K files are made once, at start: one end of a fresh socket pair
//! each, so that every one is a distinct open file (its own device and
//! inode) without touching the filesystem. A descriptor received is the
//! same open file as one sent exactly when `fstat` gives the same device
//! and inode; it is closed once checked.
//!
//! Where they come back: on seqpacket and dgram, the K with each echoed
//! message, in order. On a stream they travel with a byte: the server
//! attaches them to the first byte of the echo of the frame that held the
//! first byte of the read they arrived with, which is at or before the
//! first byte of their message's echo. So a stream check counts them in
//! order over the connection and asks that the set of message `k` has
//! come by the time the first byte of its echo is read, and that no more
//! sets come than messages have been sent.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;

/// The files sent with every message, and who they are.
#[derive(Debug)]
pub(crate) struct Passed {
    /// One end of a socket pair each (the other end is closed: the file
    /// stays open, and distinct, all the same).
    files: Vec<UnixStream>,
    /// `(dev, ino)` of each, in the order sent.
    ids: Vec<(u64, u64)>,
}

impl Passed {
    /// Makes `k` distinct open files.
    ///
    /// # Errors
    ///
    /// `socketpair` or `fstat` failing (`EMFILE`, ...).
    pub(crate) fn new(k: usize) -> io::Result<Passed> {
        let mut files = Vec::with_capacity(k);
        let mut ids = Vec::with_capacity(k);
        for _ in 0..k {
            let (mine, _) = UnixStream::pair()?;
            let meta = mine
                .as_fd()
                .try_clone_to_owned()
                .map(File::from)?
                .metadata()?;
            ids.push((meta.dev(), meta.ino()));
            files.push(mine);
        }
        Ok(Passed { files, ids })
    }

    /// How many go with each message.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The descriptors to attach to a send.
    pub(crate) fn files(&self) -> &[UnixStream] {
        &self.files
    }

    /// Checks `got`, received after `before` descriptors on the same
    /// connection (so `got[0]` should be file `before % K`), and closes
    /// them.
    ///
    /// # Errors
    ///
    /// [`FdError::Mismatch`] for the first that is not the file expected.
    pub(crate) fn check(&self, before: u64, got: &mut Vec<OwnedFd>) -> Result<(), FdError> {
        let k = self.ids.len() as u64;
        for (i, fd) in got.drain(..).enumerate() {
            let at = ((before + i as u64) % k) as usize;
            let want = self.ids[at];
            let seen = File::from(fd).metadata().map(|m| (m.dev(), m.ino()));
            if seen.as_ref().ok() != Some(&want) {
                return Err(FdError::Mismatch {
                    index: at,
                    want,
                    got: seen.map_err(|e| e.to_string()),
                });
            }
        }
        Ok(())
    }
}

/// What was wrong with the descriptors that came back.
#[derive(Debug)]
pub enum FdError {
    /// Descriptor `index` of a set is not the open file sent there.
    Mismatch {
        /// Its place in the set of K.
        index: usize,
        /// `(dev, ino)` of the file sent.
        want: (u64, u64),
        /// `(dev, ino)` of what came, or why `fstat` failed.
        got: Result<(u64, u64), String>,
    },
    /// A message's echo came with the wrong number of descriptors
    /// (message sockets), or a stream echo reached a message whose set
    /// had not come.
    Count {
        /// Descriptors expected.
        want: u64,
        /// Descriptors received.
        got: u64,
    },
    /// The kernel dropped descriptors on the way in (`MSG_CTRUNC`).
    Lost,
}

impl fmt::Display for FdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FdError::Mismatch {
                index,
                want: (dev, ino),
                got: Ok((gdev, gino)),
            } => write!(
                f,
                "descriptor {index} is another open file (dev {gdev:#x} inode {gino}, sent dev {dev:#x} inode {ino})"
            ),
            FdError::Mismatch {
                index,
                got: Err(e),
                ..
            } => write!(f, "descriptor {index}: fstat: {e}"),
            FdError::Count { want, got } => {
                write!(f, "{want} descriptors owed by now, {got} came back")
            }
            FdError::Lost => write!(f, "descriptors lost in transit (MSG_CTRUNC)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(p: &Passed, i: usize) -> OwnedFd {
        p.files[i].as_fd().try_clone_to_owned().expect("dup")
    }

    #[test]
    fn the_same_files_pass_in_order_and_others_do_not() {
        let p = Passed::new(3).expect("files");
        assert_eq!(p.len(), 3);
        let mut got = vec![dup(&p, 2), dup(&p, 0), dup(&p, 1)];
        assert!(p.check(2, &mut got).is_ok());
        assert!(got.is_empty(), "checked ones are closed");
        let mut swapped = vec![dup(&p, 1), dup(&p, 0)];
        let err = p.check(0, &mut swapped).expect_err("out of order");
        assert!(matches!(err, FdError::Mismatch { index: 0, .. }), "{err}");
        let other = Passed::new(1).expect("files");
        let mut foreign = vec![dup(&other, 0)];
        assert!(p.check(0, &mut foreign).is_err());
    }
}
