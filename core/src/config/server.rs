//! `[server]`: where the node serves its page, signaling and media.

use super::check::Cx;
use super::schema::RawServer;
use super::*;
use crate::signaling::heartbeat;
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;

/// `[server]`. The stages without `inputs` serve it: one signaling stage
/// (required) and at most one packet-forwarding stage (without one, every
/// packet goes to the rest of its room).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub span: Span,
    pub listen: SocketAddr,
    pub media_ip: IpAddr,
    /// The media port (0: one the system picks) and the media threads
    /// (0: one per core).
    pub media_port: u16,
    pub media_threads: usize,
    pub options: ServerOptions,
    /// The environment variable that holds the room token secret, and where
    /// it is named; the host reads it into `options.token_secret`.
    pub token_secret_env: Option<(String, Span)>,
}

/// How the signaling server treats its connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest text message handled, in bytes.
    pub max_message: usize,
    /// Messages per second per connection, and the burst allowed above it.
    pub rate: f64,
    pub burst: u32,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// When set, `/ws` needs `?token=` signed with this secret.
    pub token_secret: Option<Vec<u8>>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_message: 64 << 10,
            rate: 50.0,
            burst: 100,
            heartbeat_interval: heartbeat::INTERVAL,
            heartbeat_timeout: heartbeat::TIMEOUT,
            token_secret: None,
        }
    }
}

/// Checks `[server]`; `None` after reporting what is wrong.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawServer>) -> Option<ServerConfig> {
    let s = raw.get_ref();
    let errors_before = cx.error_count();
    let mut options = ServerOptions::default();
    let listen = match &s.listen {
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
        Some(l) => cx
            .ok(l
                .get_ref()
                .parse()
                .map_err(|_| cx.err(l, format!("`{}` is not an address with a port", l.get_ref()), "e.g. listen = \"127.0.0.1:8080\"")))
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
    };
    let media_ip = match &s.media_ip {
        None => listen.ip(),
        Some(ip) => ip_address(cx, ip).unwrap_or(listen.ip()),
    };
    let media_port = s.media_port.as_ref().map_or(0, |p| *p.get_ref());
    let media_threads = match &s.media_threads {
        Some(t) if *t.get_ref() > 256 => {
            cx.report(cx.err(t, "media-threads must be at most 256", "0 (the default) runs one per core"));
            0
        }
        Some(t) => *t.get_ref() as usize,
        None => 0,
    };
    if let Some(size) = &s.max_message
        && let Some(bytes) = cx.size_in(size, 256..=16 << 20, "max-message must be between 256B and 16MiB", "the default is \"64KiB\"")
    {
        options.max_message = bytes as usize;
    }
    if let Some(rate) = &s.rate {
        if rate.get_ref().is_finite() && *rate.get_ref() > 0.0 {
            options.rate = *rate.get_ref();
        } else {
            cx.report(cx.err(rate, "rate must be a positive number of messages per second", "the default is 50"));
        }
    }
    if let Some(burst) = &s.burst {
        if *burst.get_ref() == 0 {
            cx.report(cx.err(burst, "burst must be at least 1", "the default is 100"));
        }
        options.burst = (*burst.get_ref()).max(1);
    }
    let interval = s.heartbeat.as_ref().map_or(Some(options.heartbeat_interval), |d| cx.ok(cx.duration(d)));
    let timeout = s.heartbeat_timeout.as_ref().map_or(Some(options.heartbeat_timeout), |d| cx.ok(cx.duration(d)));
    // Judged only when both parsed (a bad duration is its own error).
    if let (Some(interval), Some(timeout)) = (interval, timeout) {
        if interval.is_zero() || timeout <= interval {
            let at = s.heartbeat_timeout.as_ref().or(s.heartbeat.as_ref()).map_or(raw.span(), toml::Spanned::span);
            cx.report(cx.err_at(at, "heartbeat-timeout must be longer than a non-zero heartbeat", "the defaults are \"10s\" and \"30s\""));
        }
        options.heartbeat_interval = interval;
        options.heartbeat_timeout = timeout;
    }
    let token_secret_env = s.token_secret_env.as_ref().map(|var| (var.get_ref().clone(), var.span()));
    (cx.error_count() == errors_before).then(|| ServerConfig {
        span: raw.span(),
        listen,
        media_ip,
        media_port,
        media_threads,
        options,
        token_secret_env,
    })
}

pub(super) fn ip_address(cx: &Cx, ip: &Spanned<String>) -> Option<IpAddr> {
    cx.ok(ip.get_ref().parse().map_err(|_| cx.err(ip, format!("`{}` is not an IP address", ip.get_ref()), "e.g. media-ip = \"127.0.0.1\"")))
}
