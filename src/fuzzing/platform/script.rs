//! The `platform` target's handler: every callback runs a script of
//! actions — a frame's payload is its own script; the callbacks without a
//! frame (`open`, `timer`, `drained`, `close`, `message`, `server_timer`)
//! each take the next few bytes of a tape the driver loads from the input.
//!
//! An action is two bytes, `op` and `arg`. `op & 7` picks it, `op >> 3`
//! (times 3) is a payload's filler length, `arg` picks an id or a timer
//! among the most recent ones remembered (the ids of connections long
//! closed included) or a delay:
//!
//! | `op & 7` | with a connection (`Context`)  | without (`Ctl`)     |
//! |----------|--------------------------------|---------------------|
//! | 0        | `send` (a reply)               | -                   |
//! | 1, 2     | `send_to`, `send_wire_to`      | the same            |
//! | 3        | `disconnect`                   | the same            |
//! | 4        | `set_timer`                    | `set_server_timer`  |
//! | 5        | `set_server_timer`             | the same            |
//! | 6        | `cancel_timer`                 | the same            |
//! | 7        | `close`                        | -                   |
//!
//! Each payload starts with `<serial.seq>`, the serial of the connection
//! it is addressed to and a number no other payload has, so a byte that
//! lands in the wrong place shows. Every action and what it returned is
//! reported to the model, which checks it.

use std::time::{Duration, Instant};

use super::model::Model;
use crate::codec::Frame;
use crate::ctl::Ctl;
use crate::fuzzing::Input;
use crate::handler::{Closed, ConnId, Context, Handler};
use crate::timers::TimerId;

/// Actions one callback runs at most.
const MAX_ACTIONS: usize = 32;

/// Ids and timers an action picks from: the most recent ones.
const RECENT: usize = 12;

/// The scripted handler. Its state per connection is the connection's id,
/// so every callback can check it is handed the right one.
#[derive(Debug)]
pub(super) struct Platform {
    pub(super) model: Model,
    /// The script of the callbacks without a frame.
    tape: Vec<u8>,
    /// Every id `open` saw, oldest first.
    known: Vec<ConnId>,
    /// Every timer set, oldest first.
    timers: Vec<TimerId>,
    /// The next timer token and payload number.
    token: u64,
    seq: u64,
}

/// Where an action runs: on a connection, or on the server only.
enum Cx<'a, 'b> {
    Conn(&'a mut Context<'b>),
    Server(&'a mut Ctl<'b>),
}

impl<'b> Cx<'_, 'b> {
    fn ctl(&mut self) -> &mut Ctl<'b> {
        match self {
            Cx::Conn(cx) => cx,
            Cx::Server(ctl) => ctl,
        }
    }

    fn id(&self) -> Option<ConnId> {
        match self {
            Cx::Conn(cx) => Some(cx.id()),
            Cx::Server(_) => None,
        }
    }
}

impl Platform {
    pub(super) fn new(model: Model) -> Platform {
        Platform {
            model,
            tape: Vec::new(),
            known: Vec::new(),
            timers: Vec::new(),
            token: 0,
            seq: 0,
        }
    }

    /// The next callbacks' script (replaces what is left of the last).
    pub(super) fn load_tape(&mut self, tape: &[u8]) {
        self.tape.clear();
        self.tape.extend(tape.iter().rev());
    }

    /// A callback without a frame: a count byte from the tape, then that
    /// many actions (as the tape has left).
    fn run_tape(&mut self, cx: Cx<'_, '_>) {
        let n = match self.tape.pop() {
            Some(b) => usize::from(b % 4),
            None => return,
        };
        let take = (2 * n).min(self.tape.len());
        let script: Vec<u8> = self.tape.drain(self.tape.len() - take..).rev().collect();
        self.run(&script, cx);
    }

    fn run(&mut self, script: &[u8], mut cx: Cx<'_, '_>) {
        let mut s = Input::new(script);
        for _ in 0..MAX_ACTIONS {
            if s.is_empty() {
                return;
            }
            let (op, arg) = (s.byte(), s.byte());
            self.act(op, arg, &mut cx);
        }
    }

    fn act(&mut self, op: u8, arg: u8, cx: &mut Cx<'_, '_>) {
        let filler = usize::from(op >> 3) * 3;
        let from = cx.id();
        match (op & 7, &mut *cx) {
            (0, Cx::Conn(c)) => {
                let payload = self.payload(c.id(), filler);
                c.send(&payload).expect("a line reply fits");
                self.model.reply(c.id(), &payload);
            }
            (1 | 2, _) => {
                let Some(to) = pick(&self.known, arg) else {
                    return;
                };
                let payload = self.payload(to, filler);
                let framed = op & 7 == 1;
                let result = match (framed, &mut *cx) {
                    (true, Cx::Conn(c)) => c.send_to(to, &payload),
                    (false, Cx::Conn(c)) => c.send_wire_to(to, &payload),
                    (true, Cx::Server(ctl)) => ctl.send_to(to, &payload),
                    (false, Cx::Server(ctl)) => ctl.send_wire_to(to, &payload),
                };
                self.model.push(from, to, &payload, framed, result);
            }
            (3, _) => {
                let Some(to) = pick(&self.known, arg) else {
                    return;
                };
                let result = match cx {
                    Cx::Conn(c) => c.disconnect(to),
                    Cx::Server(ctl) => ctl.disconnect(to),
                };
                self.model.disconnect(from, to, result);
            }
            (4, Cx::Conn(c)) => {
                let (token, at) = (self.next_token(), later(c.now(), arg));
                let timer = c.set_timer(at, token);
                self.model.timer_set(Some(c.id()), timer, token, at);
                self.timers.push(timer);
            }
            (4 | 5, _) => {
                let ctl = cx.ctl();
                let (token, at) = (self.next_token(), later(ctl.now(), arg));
                let timer = ctl.set_server_timer(at, token);
                self.model.timer_set(None, timer, token, at);
                self.timers.push(timer);
            }
            (6, _) => {
                let Some(timer) = pick(&self.timers, arg) else {
                    return;
                };
                let result = cx.ctl().cancel_timer(timer);
                self.model.cancel(timer, result);
            }
            (7, Cx::Conn(c)) => {
                c.close();
                self.model.handler_close(c.id());
            }
            _ => {}
        }
    }

    /// `<serial.seq>` and `filler` bytes of `~`.
    fn payload(&mut self, to: ConnId, filler: usize) -> Vec<u8> {
        self.seq += 1;
        let mut p = format!("<{}.{}>", to.serial(), self.seq).into_bytes();
        p.resize(p.len() + filler, b'~');
        p
    }

    fn next_token(&mut self) -> u64 {
        self.token += 1;
        self.token
    }
}

/// One of the last `RECENT` of `items`, by `arg`.
fn pick<T: Copy>(items: &[T], arg: u8) -> Option<T> {
    let n = items.len().min(RECENT);
    (n > 0).then(|| items[items.len() - 1 - usize::from(arg) % n])
}

/// A deadline `arg % 16` ticks of 10 ms after `now`.
fn later(now: Instant, arg: u8) -> Instant {
    now + Duration::from_millis(u64::from(arg % 16) * 10)
}

impl Handler for Platform {
    type State = ConnId;
    const PEER_CREDENTIALS: bool = false;

    fn open(&mut self, cx: &mut Context<'_>) -> ConnId {
        let id = cx.id();
        self.model.opened(id);
        self.known.push(id);
        self.run_tape(Cx::Conn(cx));
        id
    }

    fn frame(&mut self, id: &mut ConnId, frame: Frame<'_>, cx: &mut Context<'_>) {
        assert_eq!(*id, cx.id(), "a frame with another connection's state");
        self.model.frame(cx.id(), frame.payload());
        self.run(frame.payload(), Cx::Conn(cx));
    }

    fn timer(&mut self, id: &mut ConnId, token: u64, cx: &mut Context<'_>) {
        assert_eq!(*id, cx.id(), "a timer with another connection's state");
        self.model.fired(Some(cx.id()), token);
        self.run_tape(Cx::Conn(cx));
    }

    fn drained(&mut self, id: &mut ConnId, cx: &mut Context<'_>) {
        assert_eq!(*id, cx.id(), "drained with another connection's state");
        self.model.drained(cx.id());
        self.run_tape(Cx::Conn(cx));
    }

    fn close(&mut self, id: ConnId, closed: Closed, ctl: &mut Ctl<'_>) {
        assert_eq!(id, closed.id, "close with another connection's state");
        self.model.closed(id, closed.reason);
        self.run_tape(Cx::Server(ctl));
    }

    fn message(&mut self, (): (), ctl: &mut Ctl<'_>) {
        self.run_tape(Cx::Server(ctl));
    }

    fn server_timer(&mut self, token: u64, ctl: &mut Ctl<'_>) {
        self.model.fired(None, token);
        self.run_tape(Cx::Server(ctl));
    }
}
