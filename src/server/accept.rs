//! Admission: accepting connections (bounded per turn, paused when out of
//! descriptors), the connection limit and the credential check.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::Socket;

use super::conns::{Connections, Entry};
use super::logging::Who;
use super::{Core, FIRST_CONN};
use crate::conn::Conn;
use crate::handler::{Handler, PeerCred};
use crate::sys;

/// Accepts per turn before connections get theirs.
const ACCEPTS_PER_TURN: usize = 128;
/// How long accepting pauses after running out of descriptors, unless a
/// connection closes first (nginx waits 500 ms too).
const ACCEPT_PAUSE: Duration = Duration::from_millis(500);

impl<S> Connections<S> {
    /// Accepts waiting connections, up to the per-turn budget.
    pub(super) fn accept_batch<H, M>(
        &mut self,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listener.as_ref() else {
                self.accept_ready = false;
                return;
            };
            match sys::accept(listener) {
                Ok(sock) => self.admit(sock, core, registry, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                // The peer gave up while waiting: nothing to serve.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNABORTED | libc::EPROTO)) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: no busy loop; try
                    // again when a connection closes or after a pause.
                    core.stats.accept_errors += 1;
                    if let Some(n) = self.accept_log.hit(now) {
                        warn!(
                            "accept: {e}; pausing accepts ({n} failed accepts in the last second)"
                        );
                    }
                    self.accept_paused = Some(now + ACCEPT_PAUSE);
                    self.accept_ready = false;
                    return;
                }
            }
        }
    }

    /// Takes one accepted socket in, or closes it at once if it is over the
    /// limit or fails the credential check. A failed registration leaves
    /// nothing behind: the slot is only taken once the socket is in epoll.
    fn admit<H, M>(
        &mut self,
        sock: Socket,
        core: &mut Core<H, M>,
        registry: &Registry,
        now: Instant,
    ) where
        H: Handler<M, State = S>,
    {
        if self.slab.len() >= self.max_connections {
            core.stats.rejected += 1;
            if let Some(n) = self.limit_log.hit(now) {
                warn!(
                    "connection limit {} reached: closing new connections ({n} closed in the last second)",
                    self.max_connections
                );
            }
            return;
        }
        let Ok(peer) = credentials(&sock, core) else {
            return;
        };
        let vacant = self.slab.vacant_entry();
        let key = vacant.key();
        let token = Token(key + FIRST_CONN);
        let fd = sock.as_raw_fd();
        let registered = match core.limits.level_triggered() {
            true => sys::epoll_level(registry.as_fd(), sock.as_fd(), token.0, (true, false), true),
            false => registry.register(&mut SourceFd(&fd), token, Interest::READABLE),
        };
        if let Err(e) = registered {
            warn!("register new connection: {e}");
            return;
        }
        if core.limits.messages {
            // Messages up to --max-frame must fit in the send buffer.
            if let Err(e) = sys::fit_send_buffer(&sock, core.config.max_frame) {
                debug!("raise the send buffer of slot {key}: {e}");
            }
        }
        let id = core.world.peers.open(key);
        let Core {
            handler,
            limits,
            spares,
            world,
            ..
        } = &mut *core;
        let ctl = &mut world.ctl(now, None);
        let (conn, tally) = Conn::open(
            id,
            peer,
            Some(sock.as_fd()),
            now,
            limits,
            handler,
            spares,
            ctl,
        );
        core.stats.frames_out += tally.frames_out;
        vacant.insert(Entry::new(sock, conn));
        core.stats.accepted += 1;
        core.stats.open += 1;
        debug!("accepted {id} ({})", Who(peer));
        self.apply_pushes(core, registry, now);
        self.flush(key, core, now);
        self.settle(key, core, registry);
    }
}

/// The peer's credentials, asked of the kernel only when an allow-list or
/// the handler needs them (one `getsockopt` per accept otherwise saved);
/// `Err` when the allow-list rejects the peer (counted and logged).
fn credentials<H: Handler<M>, M>(
    sock: &Socket,
    core: &mut Core<H, M>,
) -> Result<Option<PeerCred>, ()> {
    let checks = core.config.checks_credentials();
    if !checks && !<H as Handler<M>>::PEER_CREDENTIALS {
        return Ok(None);
    }
    let peer = sys::peer_cred(sock.as_fd()).ok();
    let config = &core.config;
    // Supplementary groups count as file permissions count them: asked
    // of the kernel only when the uid and primary gid did not match.
    let allowed = || {
        peer.is_some_and(|p| config.allows(p.uid, p.gid))
            || (!config.allow_gids.is_empty()
                && sys::peer_groups(sock.as_fd())
                    .is_ok_and(|groups| groups.iter().any(|g| config.allow_gids.contains(g))))
    };
    if checks && !allowed() {
        core.stats.rejected_cred += 1;
        match peer {
            Some(p) => warn!("rejected peer {p}: not in --allow-uid/--allow-gid"),
            None => warn!("rejected peer: credentials unavailable"),
        }
        return Err(());
    }
    Ok(peer)
}
