//! What the echo bench runs: the workloads, each in a family that names
//! the servers able to run it and the peers its ratios are taken against.

use uds_reactor::SocketType;

use crate::procs::{Kind, Spec};
use crate::table::Unit;

/// Workloads that the same servers answer: a socket type, and for
/// streams whether every message carries a descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Plain stream echo: uds-reactor, tokio-ct, std-threads, raw-epoll.
    Stream,
    /// Seqpacket echo: uds-reactor `--type seqpacket`, raw-epoll-seqpacket.
    Seqpacket,
    /// Datagram echo: uds-reactor `--type dgram`, raw-epoll-dgram,
    /// tokio-dgram.
    Dgram,
    /// Stream echo with one descriptor per message: uds-reactor
    /// `--max-fds 1`, raw-epoll-fds.
    Fds,
}

/// uds-reactor (and `uds-reactor-base`) as a family's server.
const fn reactor(name: &'static str, kind: Kind, ty: SocketType, fds: bool) -> Spec {
    let flags: &'static [&'static str] = if fds { &["--max-fds", "1"] } else { &[] };
    Spec {
        name,
        kind,
        ty,
        flags,
    }
}

/// A peer from benches/peers.
const fn peer(name: &'static str, ty: SocketType) -> Spec {
    Spec {
        name,
        kind: Kind::Peer(name),
        ty,
        flags: &[],
    }
}

const STREAM: [Spec; 4] = [
    reactor("uds-reactor", Kind::Reactor, SocketType::Stream, false),
    peer("tokio-ct", SocketType::Stream),
    peer("std-threads", SocketType::Stream),
    peer("raw-epoll", SocketType::Stream),
];
const SEQPACKET: [Spec; 2] = [
    reactor("uds-reactor", Kind::Reactor, SocketType::Seqpacket, false),
    peer("raw-epoll-seqpacket", SocketType::Seqpacket),
];
const DGRAM: [Spec; 3] = [
    reactor("uds-reactor", Kind::Reactor, SocketType::Dgram, false),
    peer("raw-epoll-dgram", SocketType::Dgram),
    peer("tokio-dgram", SocketType::Dgram),
];
const FDS: [Spec; 2] = [
    reactor("uds-reactor", Kind::Reactor, SocketType::Stream, true),
    peer("raw-epoll-fds", SocketType::Stream),
];

impl Family {
    /// The servers that run this family's workloads, in table order
    /// (without `uds-reactor-base`: see [`Family::baseline`]).
    pub fn servers(self) -> &'static [Spec] {
        match self {
            Family::Stream => &STREAM,
            Family::Seqpacket => &SEQPACKET,
            Family::Dgram => &DGRAM,
            Family::Fds => &FDS,
        }
    }

    /// `UDSR_BENCH_BASELINE`'s binary, with uds-reactor's flags here.
    pub fn baseline(self) -> Spec {
        Spec {
            name: "uds-reactor-base",
            kind: Kind::Baseline,
            ..self.servers()[0]
        }
    }

    /// The raw-epoll peer: the limit, and a ratio column.
    pub fn raw(self) -> &'static str {
        match self {
            Family::Stream => "raw-epoll",
            Family::Seqpacket => "raw-epoll-seqpacket",
            Family::Dgram => "raw-epoll-dgram",
            Family::Fds => "raw-epoll-fds",
        }
    }

    /// The tokio peer, where tokio has the socket type: a ratio column.
    pub fn tokio(self) -> Option<&'static str> {
        match self {
            Family::Stream => Some("tokio-ct"),
            Family::Dgram => Some("tokio-dgram"),
            Family::Seqpacket | Family::Fds => None,
        }
    }

    /// The socket type of its servers and of the load generator.
    pub fn ty(self) -> SocketType {
        self.servers()[0].ty
    }

    /// Descriptors the load generator attaches to every message.
    pub fn fds(self) -> usize {
        usize::from(self == Family::Fds)
    }
}

/// One workload.
pub struct Workload {
    pub name: &'static str,
    pub family: Family,
    pub unit: Unit,
    pub connections: usize,
    /// Bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// One echo per connection, then a new one.
    pub churn: bool,
}

/// Idle connections opened for the RSS workload.
pub const IDLE: usize = 10_000;

/// Every workload, in table order.
pub const WORKLOADS: [Workload; 14] = [
    Workload::load("ping-pong 1", Family::Stream, Unit::Messages, 1, 64, 1),
    Workload::load("ping-pong 100", Family::Stream, Unit::Messages, 100, 64, 1),
    Workload::load("stream 1", Family::Stream, Unit::Bytes, 1, 64 << 10, 4),
    Workload::load("stream 100", Family::Stream, Unit::Bytes, 100, 16 << 10, 4),
    Workload {
        churn: true,
        ..Workload::load("churn", Family::Stream, Unit::Connections, 8, 64, 1)
    },
    Workload::load("idle 10k", Family::Stream, Unit::Rss, IDLE, 0, 0),
    Workload::load(
        "seqpacket ping-pong 1",
        Family::Seqpacket,
        Unit::Messages,
        1,
        64,
        1,
    ),
    Workload::load(
        "seqpacket ping-pong 100",
        Family::Seqpacket,
        Unit::Messages,
        100,
        64,
        1,
    ),
    Workload::load(
        "seqpacket bulk 1",
        Family::Seqpacket,
        Unit::Bytes,
        1,
        8 << 10,
        8,
    ),
    Workload::load("dgram ping-pong 1", Family::Dgram, Unit::Messages, 1, 64, 1),
    Workload::load(
        "dgram ping-pong 100",
        Family::Dgram,
        Unit::Messages,
        100,
        64,
        1,
    ),
    Workload::load("dgram bulk 1", Family::Dgram, Unit::Bytes, 1, 8 << 10, 8),
    Workload::load("fd ping-pong 1", Family::Fds, Unit::Messages, 1, 64, 1),
    Workload::load("fd ping-pong 100", Family::Fds, Unit::Messages, 100, 64, 1),
];

impl Workload {
    const fn load(
        name: &'static str,
        family: Family,
        unit: Unit,
        connections: usize,
        size: usize,
        pipeline: usize,
    ) -> Workload {
        Workload {
            name,
            family,
            unit,
            connections,
            size,
            pipeline,
            churn: false,
        }
    }

    /// The family's workload that moves the most bytes at once: each
    /// server runs it briefly, unmeasured, before the first repetition.
    pub fn warm_up(family: Family) -> &'static Workload {
        WORKLOADS
            .iter()
            .filter(|w| w.family == family && w.unit != Unit::Rss)
            .max_by_key(|w| w.connections * w.size * w.pipeline)
            .expect("every family has a workload")
    }
}
