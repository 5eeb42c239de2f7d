//! TCP keepalive on a socket: idle connections are probed, so a peer that vanished without a
//! word (a crashed host, a dropped network path) ends the connection instead of leaving a
//! session waiting for ever.

use std::time::Duration;
use tokio::net::TcpStream;

/// Keepalive timing (`tcp_keepalive:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
}

impl Keepalive {
    /// Turns keepalive on for `stream` with this timing.
    pub fn apply(&self, stream: &TcpStream) -> std::io::Result<()> {
        let settings = socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval);
        #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
        let settings = settings.with_retries(self.count);
        socket2::SockRef::from(stream).set_tcp_keepalive(&settings)
    }
}
