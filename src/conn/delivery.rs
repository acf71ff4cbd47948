//! How a connection hands its handler a [`Context`]: the output the
//! replies go to (bytes or records, and the descriptors attached to
//! them), and the delivery of decoded frames one by one.

use std::ops::Range;
use std::os::fd::OwnedFd;

use super::{Limits, Tally};
use crate::buffer::Buffer;
use crate::codec::Frame;
use crate::ctl::Ctl;
use crate::fds::Attached;
use crate::handler::{ConnId, Context, Handler, PeerCred};
use crate::outbox::{Outbox, Through};

/// A connection's unsent output: bytes for a stream, records for
/// messages, and the descriptors attached to them (made on first use).
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) bytes: Buffer,
    pub(super) fds: Option<Box<Attached>>,
}

/// The context for one callback: replies go to `out`, encoded as the
/// connection's socket type and framing want (or, with `through`, go
/// through from the read being handled).
// The connection's parts, lent one by one: grouping them would only hide that.
#[allow(clippy::too_many_arguments)]
pub(super) fn context<'a>(
    id: ConnId,
    peer: Option<PeerCred>,
    limits: &Limits,
    out: &'a mut Output,
    received: Option<&'a mut Vec<OwnedFd>>,
    spare: &'a mut Vec<u8>,
    ctl: &'a mut Ctl<'_>,
    through: Option<Through<'a>>,
) -> Context<'a> {
    let limit = limits.out_limit();
    let Output { bytes: out, fds } = out;
    let outbox = if limits.messages {
        Outbox::Messages {
            out,
            limit,
            fds,
            through,
        }
    } else {
        Outbox::Stream {
            out,
            framing: limits.framing,
            limit,
            fds,
            through,
        }
    };
    Context::new(id, peer, outbox, received, spare, ctl.reborrow())
}

/// Hands decoded frames to the handler one by one, counting them and
/// noting when it asks to close (which stops delivery), and which piece of
/// the read the replies went through as.
pub(super) struct Delivery<'a, 'c> {
    id: ConnId,
    peer: Option<PeerCred>,
    limits: &'a Limits,
    out: &'a mut Output,
    /// The descriptors waiting for the next frame; those its callback
    /// leaves are closed after it.
    received: Option<&'a mut Vec<OwnedFd>>,
    spare: &'a mut Vec<u8>,
    ctl: &'a mut Ctl<'c>,
    /// The read being delivered from, and where the descriptors of a
    /// reply that goes through wait (`None`: frames from elsewhere, the
    /// partial frame at EOF).
    input: Option<(&'a [u8], &'a mut Vec<OwnedFd>)>,
    /// The piece of `input` the replies so far went through as.
    pub(super) through: Option<Range<usize>>,
    pub(super) tally: Tally,
    pub(super) close: bool,
}

impl<'a, 'c> Delivery<'a, 'c> {
    // The connection's parts, lent one by one (as to `context`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: ConnId,
        peer: Option<PeerCred>,
        limits: &'a Limits,
        out: &'a mut Output,
        received: Option<&'a mut Vec<OwnedFd>>,
        spare: &'a mut Vec<u8>,
        ctl: &'a mut Ctl<'c>,
        input: Option<(&'a [u8], &'a mut Vec<OwnedFd>)>,
    ) -> Delivery<'a, 'c> {
        Delivery {
            id,
            peer,
            limits,
            out,
            received,
            spare,
            ctl,
            input,
            through: None,
            tally: Tally::default(),
            close: false,
        }
    }

    /// One frame to the handler; `false` once it asked to close.
    #[inline(always)]
    pub(super) fn deliver<H: Handler<M>, M>(
        &mut self,
        handler: &mut H,
        state: &mut H::State,
        frame: Frame<'_>,
    ) -> bool {
        let mut cx = context(
            self.id,
            self.peer,
            self.limits,
            self.out,
            self.received.as_deref_mut(),
            self.spare,
            self.ctl,
            self.input.as_mut().map(|(input, fds)| Through {
                input,
                piece: &mut self.through,
                fds,
            }),
        );
        handler.frame(state, frame, &mut cx);
        let (close, sent) = cx.outcome();
        if let Some(left) = self.received.as_deref_mut() {
            left.clear(); // not taken: closed
        }
        self.tally.frames_in += 1;
        self.tally.frames_out += sent;
        self.close = close;
        !close
    }
}
