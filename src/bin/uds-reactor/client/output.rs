//! The client's output side: replies to stdout (or any writer), buffered;
//! the descriptors that came with them reported on stderr.

use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use uds_reactor::Error;

use super::CHUNK;

/// The client's output: buffered, and closed for good after `EPIPE`
/// (whoever reads it is gone; not an error).
pub struct Output<W: Write> {
    inner: io::BufWriter<W>,
    /// The first write error, reported at the next flush.
    error: Option<io::Error>,
    /// Whoever reads the output is gone (`EPIPE`): not an error.
    pub closed: bool,
}

impl<W: Write> Output<W> {
    /// Buffers writes to `w`.
    pub fn new(w: W) -> Output<W> {
        Output {
            inner: io::BufWriter::with_capacity(CHUNK, w),
            error: None,
            closed: false,
        }
    }

    /// Writes `bytes`; returns whether to go on (a frame sink's answer).
    pub fn write(&mut self, bytes: &[u8]) -> bool {
        if self.error.is_none() {
            if let Err(e) = self.inner.write_all(bytes) {
                self.error = Some(e);
            }
        }
        self.error.is_none()
    }

    /// Writes `payload` and a newline.
    pub fn line(&mut self, payload: &[u8]) -> bool {
        self.write(payload) && self.write(b"\n")
    }

    /// Writes out what is buffered, reporting the first write error.
    pub fn flush(&mut self) -> Result<(), Error> {
        let result = match self.error.take() {
            Some(e) => Err(e),
            None => self.inner.flush(),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                self.closed = e.kind() == ErrorKind::BrokenPipe;
                Err(Error::io("write", "stdout", e))
            }
        }
    }
}

/// Reports each of `fds` on stderr as `fd N -> TARGET` (TARGET as
/// `/proc/self/fd/N` links to it) and closes it; says so when the kernel
/// dropped some (`lost`: more than fit, or we are out of descriptors).
pub fn report_fds(fds: &mut Vec<OwnedFd>, lost: bool) {
    for fd in fds.drain(..) {
        let n = fd.as_raw_fd();
        match std::fs::read_link(format!("/proc/self/fd/{n}")) {
            Ok(target) => eprintln!("fd {n} -> {}", target.display()),
            Err(e) => eprintln!("fd {n} -> ? ({e})"),
        }
    }
    if lost {
        eprintln!("uds-reactor client: descriptors lost in transit (MSG_CTRUNC: more than fit, or out of descriptors)");
    }
}
