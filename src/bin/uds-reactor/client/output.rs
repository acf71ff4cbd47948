//! The client's output side: replies to stdout (or any writer), buffered.

use std::io::{self, ErrorKind, Write};

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
