//! The server's life around the loop: signals, the announcement once
//! listening (and, in the new process of an upgrade, telling the old one),
//! shutdown (stop accepting, give up the socket file, drain), and the end
//! (close what is left, log the counters).

use std::time::Instant;

use log::{debug, info, warn};
use mio::Interest;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use super::{Endpoint, Server, SIGNALS};
use crate::config::Address;
use crate::error::Error;
use crate::handler::Handler;
use crate::stats::Stats;
use crate::sys;

impl<H: Handler<M>, M> Server<H, M> {
    /// Shuts down on SIGINT/SIGTERM/SIGHUP (a second one ends the drain at
    /// once) and logs the counters on SIGUSR1, as the binary does. Without
    /// it, only [`Handle::stop`](super::Handle::stop) stops the server.
    /// The handlers are process-wide, so this is the embedding program's
    /// choice to make.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the handlers cannot be installed.
    pub fn handle_signals(&mut self) -> Result<(), Error> {
        // SIGHUP (the terminal went away) stops us like SIGTERM, leaving no
        // stale file behind, unless it was ignored when we started (nohup).
        let mut stopping = vec![SIGINT, SIGTERM, SIGUSR1];
        if !sys::signal_ignored(SIGHUP) {
            stopping.push(SIGHUP);
        }
        let target = || format!("signal handlers for {}", super::shown(&self.core.config));
        let mut signals = Signals::new(stopping).map_err(|e| Error::io("install", target(), e))?;
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| Error::io("register", target(), e))?;
        self.signals = Some(signals);
        Ok(())
    }

    pub(super) fn take_signals(&mut self, now: Instant) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        let (mut stop, mut upgrade) = (false, false);
        for signal in signals.pending() {
            match signal {
                SIGUSR1 => info!("{}", self.core.stats),
                SIGUSR2 => upgrade = true,
                _ => stop = true,
            }
        }
        if upgrade && stop {
            warn!("SIGUSR2 ignored: shutting down");
        } else if upgrade {
            self.on_sigusr2(now);
        }
        if !stop {
            return;
        }
        if self.draining.is_none() {
            self.begin_shutdown(now);
        } else {
            // A second signal: the operator does not want to wait.
            let n = self.endpoint.open();
            warn!(
                "second signal: exiting now without flushing {n} connection{}",
                plural(n)
            );
            self.draining = Some(now);
        }
    }

    /// Stop accepting and reading, remove the socket file, and give every
    /// connection until the drain deadline to flush. After an upgrade's
    /// handover the file is the new process's, and it is systemd's main
    /// process: no `STOPPING=1`.
    pub(super) fn begin_shutdown(&mut self, now: Instant) {
        self.settle_upgrade(now);
        let n = self.endpoint.open();
        info!(
            "shutting down: flushing {n} connection{} for up to {:?}",
            plural(n),
            self.core.config.drain_timeout
        );
        self.draining = Some(now + self.core.config.drain_timeout);
        self.stop_listening();
        if let Endpoint::Connections(c) = &mut self.endpoint {
            c.shutdown(&mut self.core, self.poll.registry(), now);
        }
        if self.core.config.systemd && !self.upgrade.handed_over() {
            if let Err(e) = sys::notify("STOPPING=1") {
                debug!("notify STOPPING=1: {e}");
            }
        }
    }

    /// No more connections or datagrams are taken; the socket file, if it
    /// is still ours, is removed (dropping its guard does it), and so is
    /// the metrics socket.
    fn stop_listening(&mut self) {
        match &mut self.endpoint {
            Endpoint::Connections(c) => c.stop_listening(self.poll.registry()),
            Endpoint::Datagrams(d) => d.stop_reading(),
        }
        self.file = None;
        // Scrapes in flight are dropped with it: the counters they would
        // get are logged at the end anyway.
        self.metrics = None;
    }

    /// The end of [`run`](Self::run), however it ended: everything still
    /// open is closed, and the counters are published, logged and given
    /// back.
    pub(super) fn finish(mut self) -> (Stats, H) {
        if self.draining.is_none() {
            self.settle_upgrade(Instant::now());
            self.stop_listening();
        }
        let mut core = self.core;
        match self.endpoint {
            Endpoint::Connections(mut c) => c.close_all(&mut core, Instant::now()),
            Endpoint::Datagrams(d) => d.finish(&mut core),
        }
        self.shared.stats.publish(&core.stats);
        info!("{}", core.stats);
        (core.stats, core.handler)
    }

    /// Logs `listening on ...` and, with systemd support, says `READY=1`
    /// (with `MAINPID=` in the new process of an upgrade, which then tells
    /// the old one).
    pub(super) fn announce(&mut self) {
        let tell = self.upgrade.take_tell();
        let config = &self.core.config;
        let addr = super::shown(config);
        // Only a path we bound ourselves has a file of ours.
        let inherited = self.file.is_none() && matches!(config.address, Some(Address::Path(_)));
        let from = match &tell {
            Some(_) => format!(
                ", taken over from process {}",
                std::os::unix::process::parent_id()
            ),
            None if inherited => ", descriptor 3 from systemd".into(),
            None => String::new(),
        };
        info!(
            "listening on {addr} ({}, {}){from}",
            config.socket_type, config.framing
        );
        if let Some(m) = &self.metrics {
            info!("metrics on {} (GET /metrics)", m.address);
        }
        if matches!(config.address, Some(Address::Abstract(_))) && !config.checks_credentials() {
            warn!("{addr} is an abstract address: file permissions do not apply, any process in this network namespace can connect or send to it (use --allow-uid/--allow-gid)");
        }
        if config.systemd {
            // systemd must know the new main process before the old exits.
            let state = match &tell {
                Some(_) => format!("MAINPID={}\nREADY=1", std::process::id()),
                None => "READY=1".into(),
            };
            if let Err(e) = sys::notify(&state) {
                warn!("notify READY=1: {e}");
            }
        }
        if let Some(tell) = tell {
            if let Err(e) = sys::send_nosignal(&tell, b"L") {
                warn!("upgrade: cannot tell the old process that we listen: {e}");
            }
        }
    }
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}
