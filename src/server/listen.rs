//! Where the socket comes from: bound as the config says, or inherited by
//! socket activation (from systemd, or from the old process of an
//! upgrade, with the metrics socket and the ownership of their files).

use socket2::Socket;

use crate::config::{Address, Config};
use crate::error::Error;
use crate::sys::{self, SocketFile};

/// The sockets [`listen`] found or made.
pub(super) struct Listening {
    pub(super) socket: Socket,
    /// The socket file we own (created, or handed over by an upgrade).
    pub(super) file: Option<SocketFile>,
    /// The metrics socket passed with the main one, and its file if ours.
    pub(super) metrics: Option<(Socket, Option<SocketFile>)>,
    /// The channel to the old process, when an upgrade started us.
    pub(super) takeover: Option<Socket>,
}

/// The listening socket: inherited by socket activation (with
/// `config.systemd`: from systemd, or from the old process of an upgrade,
/// with the metrics socket and the ownership of their files), else bound
/// as `config` says. An inherited socket's address replaces whatever
/// `config` named.
pub(super) fn listen(config: &mut Config) -> Result<Listening, Error> {
    if config.systemd {
        if let Some(inherited) = sys::inherited_sockets(config.socket_type)? {
            return Ok(take_over(config, inherited));
        }
    }
    if config.address.is_none() {
        return Err(Error::Config(
            "no PATH given and no socket inherited from systemd".into(),
        ));
    }
    let bound = sys::bind(config)?;
    Ok(Listening {
        socket: bound.socket,
        file: bound.file,
        metrics: None,
        takeover: None,
    })
}

/// Serves what activation passed. A socket file is ours only if an upgrade
/// handed it over and the path still names it: systemd's stay systemd's.
fn take_over(config: &mut Config, inherited: sys::Inherited) -> Listening {
    let sys::Inherited {
        main,
        metrics,
        takeover,
    } = inherited;
    let (ready, file_id, metrics_id) = match takeover {
        Some(t) => (Some(t.ready), t.file, t.metrics_file),
        None => (None, None, None),
    };
    let adopt = |address: &Option<Address>, id: Option<sys::FileId>| match (address, id) {
        (Some(Address::Path(path)), Some(id)) => SocketFile::adopt(path, id),
        _ => None,
    };
    config.address = sys::local_address(&main);
    let file = adopt(&config.address, file_id);
    let metrics = metrics.map(|socket| {
        if let Some(address) = sys::local_address(&socket) {
            config.metrics = Some(address);
        }
        let file = adopt(&config.metrics, metrics_id);
        (socket, file)
    });
    Listening {
        socket: main,
        file,
        metrics,
        takeover: ready,
    }
}
