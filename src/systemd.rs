//! systemd's notification protocol (`Type=notify`): `READY=1` once pgrouter serves,
//! `RELOADING=1` … `READY=1` around a `SIGHUP` reload, `STOPPING=1` at shutdown, and `WATCHDOG=1`
//! at half of `WatchdogSec` while the runtime is alive. A datagram to `$NOTIFY_SOCKET` each;
//! nothing at all when that is unset (not started by systemd). Never fails the caller.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go, if systemd asked for them.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace); `None` when unset or
    /// unusable (logged).
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let target = target.to_string_lossy().into_owned();
        let address = if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&target)
        };
        let made = address.and_then(|address| Ok((UnixDatagram::unbound()?, address)));
        match made {
            Ok((socket, address)) => Some(Notifier { socket, address }),
            Err(e) => {
                tracing::warn!(error = %e, socket = target, "cannot notify systemd");
                None
            }
        }
    }

    /// Sends one notification (`KEY=value` lines). A datagram to a local socket does not block.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.socket.send_to_addr(state.as_bytes(), &self.address) {
            tracing::warn!(error = %e, state, "systemd notification failed");
        }
    }

    /// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process if
    /// `$WATCHDOG_PID` is set): pings go out at half of it.
    pub fn watchdog_interval() -> Option<Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
            if pid.to_string_lossy() != std::process::id().to_string() {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}
