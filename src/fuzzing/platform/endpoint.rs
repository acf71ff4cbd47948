//! The `platform` driver's server side: how the connection endpoint
//! (`server/conns.rs`, `server/pump.rs`) writes, settles, applies pushes,
//! runs its turn (due timers, `drained`, reaping) and closes, mirrored
//! step for step without sockets, each step reported to the model.

use super::{Driver, Entry};
use crate::ctl::{Owner, Push};
use crate::handler::{ConnId, Handler};
use crate::timers::TimerId;

impl Driver {
    /// Writes what the socket's room takes.
    pub(super) fn flush(&mut self, key: usize) {
        let Some(e) = self.slab.get_mut(key) else {
            return;
        };
        while e.conn.pending() > 0 && e.room > 0 {
            let data = e.conn.transmit(&self.limits);
            let n = data.len().min(e.room);
            self.handler.model.wrote(e.id, &data[..n]);
            e.room -= n;
            e.conn
                .handle_written(n, self.now, &self.limits, &mut self.spares);
        }
    }

    /// As the server's `settle`: reap it once done, else bring its
    /// deadline and push-table entry in line (and note `drained`).
    pub(super) fn settle(&mut self, key: usize) {
        let Some(e) = self.slab.get_mut(key) else {
            return;
        };
        let timers = &mut self.world.timers;
        if e.conn.is_done() {
            if !e.reaping {
                timers.cancel(&mut e.timer);
                self.world.peers.close(e.id, timers);
                self.handler.model.reaping(e.id);
                e.reaping = true;
                self.reap.push(key);
            }
            return;
        }
        match e.conn.poll_timeout(&self.limits) {
            Some(deadline) => timers.schedule(&mut e.timer, Owner::Deadline(key), deadline),
            None => timers.cancel(&mut e.timer),
        }
        let low_water = self.limits.max_buffer / 2;
        self.handler.model.settled(e.id);
        if self.world.peers.settle(key, e.conn.pending(), low_water) {
            self.drained.push(e.id);
        }
    }

    /// As the server's `apply_pushes`: in order, to the same connection
    /// only (a stale id reaches nobody), then each target written once.
    pub(super) fn apply_pushes(&mut self) {
        let mut touched = Vec::new();
        while !self.world.pushes.is_empty() {
            let (ops, bytes, fds) = self.world.pushes.take();
            let mut at = 0;
            for op in &ops {
                let (to, payload) = match *op {
                    Push::Send { to, len, .. } => {
                        at += len;
                        (to, Some(&bytes[at - len..at]))
                    }
                    Push::Close { to } => (to, None),
                };
                let reaches = self.handler.model.apply(to, payload.map(<[u8]>::len));
                let Some(e) = self.slab.get_mut(to.slot()).filter(|e| e.id == to) else {
                    assert!(!reaches, "a push to open {to:?} was dropped");
                    continue;
                };
                assert!(reaches, "a push reached {to:?} after its close");
                assert!(!e.reaping, "a push accepted for reaped {to:?}");
                match (*op, payload) {
                    (Push::Send { framed, .. }, Some(p)) => {
                        let ctl = &mut self.world.ctl(self.now, None);
                        e.conn
                            .push(p, framed, Vec::new(), &self.limits, &mut self.spares, ctl);
                    }
                    _ => e.conn.handle_disconnect(),
                }
                if !touched.contains(&to.slot()) {
                    touched.push(to.slot());
                }
            }
            self.world.pushes.done(ops, bytes, fds);
            for key in touched.drain(..) {
                self.flush(key);
                self.settle(key);
            }
        }
    }

    /// As the server's `turn` (accepts and reads aside): due timers,
    /// `drained`, reaping.
    pub(super) fn turn(&mut self) {
        while let Some((timer, owner)) = self.world.timers.pop_due(self.now) {
            self.fire(timer, owner);
        }
        self.handler.model.timers_due(self.now);
        // By index as it grows, by id: as the server walks it.
        let mut i = 0;
        while i < self.drained.len() {
            let id = self.drained[i];
            i += 1;
            self.drained_one(id);
        }
        self.drained.clear();
        while !self.reap.is_empty() {
            for key in std::mem::take(&mut self.reap) {
                if let Some(entry) = self.slab.try_remove(key) {
                    self.close(entry);
                }
            }
            self.apply_pushes();
        }
    }

    /// The `drained` queued for `id`, as the server calls it: if that
    /// connection is still in the slab (a done one ignores it).
    pub(super) fn drained_one(&mut self, id: ConnId) {
        if self.slab.get(id.slot()).is_none_or(|e| e.id != id) {
            self.handler.model.drained_skipped(id);
            return;
        }
        self.invoke(id.slot(), &mut |conn, id, handler, limits, spares, ctl| {
            conn.handle_drained(id, limits, handler, spares, ctl)
        });
        self.after(id.slot());
    }

    /// One due timer, dispatched by its owner.
    pub(super) fn fire(&mut self, timer: TimerId, owner: Owner) {
        match owner {
            Owner::Deadline(key) => {
                let e = self
                    .slab
                    .get_mut(key)
                    .expect("a deadline outlives its connection");
                e.timer = None;
                e.conn
                    .handle_timeout(self.now, &self.limits, &mut self.spares);
                if e.conn.is_done() {
                    self.handler.model.killed(e.id);
                }
                self.settle(key);
            }
            Owner::Conn { key, serial, token } => {
                let id = Owner::conn_id(key, serial);
                self.handler.model.popped(timer, Some(id), token, self.now);
                if self.world.peers.timer_fired(id, timer) {
                    self.invoke(id.slot(), &mut |conn, id, handler, limits, spares, ctl| {
                        conn.handle_timer(id, token, limits, handler, spares, ctl)
                    });
                    self.after(id.slot());
                }
                self.handler.model.popped_end();
            }
            Owner::Server { token } => {
                self.handler.model.popped(timer, None, token, self.now);
                let ctl = &mut self.world.ctl(self.now, None);
                self.handler.server_timer(token, ctl);
                self.apply_pushes();
                self.handler.model.popped_end();
            }
        }
    }

    /// As the server's `close_entry`: its deadline and timers go, then the
    /// handler's `close`.
    pub(super) fn close(&mut self, mut entry: Entry) {
        let world = &mut self.world;
        world.timers.cancel(&mut entry.timer);
        world.peers.close(entry.id, &mut world.timers);
        let ctl = &mut world.ctl(self.now, None);
        entry
            .conn
            .finish(entry.id, &mut self.handler, &mut self.spares, ctl);
    }
}
