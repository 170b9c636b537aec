//! `[admin]`: the operator's side of a running node — the admin HTTP
//! listener (metrics, health, stage state and control) and the system
//! monitor's thresholds. Every key is optional; a file without `[admin]`
//! gets the defaults.

use super::check::Cx;
use super::schema::RawAdmin;
use super::*;
use std::net::SocketAddr;
use toml::Spanned;

/// The admin listener's address when none is given.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";

/// `[admin]`, checked.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where the admin API listens; `None`: `listen = "off"`.
    pub listen: Option<SocketAddr>,
    /// Whether `listen` was written in the file (then failing to bind it
    /// stops the node; the default only warns).
    pub listen_given: bool,
    /// Where the bearer token comes from (required beyond loopback).
    pub token: Option<(TokenSource, Span)>,
    /// The token itself, read by the host ([`TokenSource`]).
    pub token_value: Option<String>,
    pub monitor: MonitorConfig,
    /// Drain's grace period: how long connections get to go before the
    /// node exits anyway.
    pub grace: Duration,
}

/// Where the admin bearer token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env(String),
    File(PathBuf),
}

/// The system monitor: how often it samples, and when it warns.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    pub every: Duration,
    /// Resident memory above which the node is degraded, in bytes.
    pub max_rss: u64,
    /// Async tasks above which the node is degraded.
    pub max_tasks: u64,
}

impl Default for MonitorConfig {
    /// The seed's: every 30 s, 500 MB resident, 1000 tasks.
    fn default() -> Self {
        MonitorConfig { every: Duration::from_secs(30), max_rss: 500_000_000, max_tasks: 1000 }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: DEFAULT_LISTEN.parse().ok(),
            listen_given: false,
            token: None,
            token_value: None,
            monitor: MonitorConfig::default(),
            grace: Duration::from_secs(10),
        }
    }
}

/// Checks `[admin]`; the defaults (with the errors reported) where it is wrong.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawAdmin>) -> AdminConfig {
    let a = raw.get_ref();
    let mut admin = AdminConfig::default();
    if let Some(l) = &a.listen {
        admin.listen_given = true;
        admin.listen = match l.get_ref().as_str() {
            "off" => None,
            text => cx.ok(text.parse().map_err(|_| {
                cx.err(l, format!("`{text}` is not an address with a port"), format!("e.g. listen = \"{DEFAULT_LISTEN}\", or \"off\""))
            })),
        };
    }
    admin.token = match (&a.token_env, &a.token_file) {
        (Some(var), None) => Some((TokenSource::Env(var.get_ref().clone()), var.span())),
        (None, Some(path)) => Some((TokenSource::File(cx.file.dir().join(path.get_ref())), path.span())),
        (Some(_), Some(file)) => {
            cx.report(cx.err(file, "give token-env or token-file, not both", "keep the one that holds the admin token"));
            None
        }
        (None, None) => None,
    };
    if let Some(listen) = admin.listen
        && !listen.ip().is_loopback()
        && admin.token.is_none()
    {
        let at = a.listen.as_ref().map_or(raw.span(), Spanned::span);
        cx.report(cx.err_at(
            at,
            format!("the admin API on {listen} is reachable beyond this machine, and has no token"),
            "add token-env = \"VAR\" or token-file = \"path\" (requests then need `Authorization: Bearer <token>`), or listen on 127.0.0.1",
        ));
    }
    if let Some(every) = &a.monitor_every
        && let Some(every) = cx.duration_in(
            every,
            Duration::from_millis(10)..=Duration::from_secs(3600),
            "monitor-every must be between 10ms and 1h",
            "the default is \"30s\"",
        )
    {
        admin.monitor.every = every;
    }
    if let Some(rss) = &a.max_rss
        && let Some(bytes) = cx.size_in(rss, 1 << 20..=1 << 50, "max-rss must be between 1MiB and 1PiB", "the default is \"500MB\"")
    {
        admin.monitor.max_rss = bytes;
    }
    if let Some(tasks) = &a.max_tasks {
        if *tasks.get_ref() == 0 {
            cx.report(cx.err(tasks, "max-tasks must be at least 1", "the default is 1000"));
        } else {
            admin.monitor.max_tasks = *tasks.get_ref();
        }
    }
    if let Some(grace) = &a.grace
        && let Some(grace) =
            cx.duration_in(grace, Duration::ZERO..=Duration::from_secs(600), "grace must be at most 10m", "the default is \"10s\"")
    {
        admin.grace = grace;
    }
    admin
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(text: &str) -> Result<AdminConfig, ConfigErrors> {
        let file = format!("{text}\n[server]\n\n[[stage]]\nid = \"s\"\nplugin = \"stock:signaling\"\n");
        PipelineConfig::parse("admin.toml", file).map(|c| c.admin)
    }

    #[test]
    fn defaults_and_settings() {
        let a = admin("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.listen, Some(SocketAddr::from(([127, 0, 0, 1], 9090))));
        assert!(!a.listen_given);
        assert_eq!(a.monitor, MonitorConfig::default());
        let a = admin("[admin]\nlisten = \"off\"\nmonitor-every = \"1s\"\nmax-rss = \"100MiB\"\nmax-tasks = 5\ngrace = \"2s\"")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.listen, None);
        assert_eq!(a.monitor, MonitorConfig { every: Duration::from_secs(1), max_rss: 100 << 20, max_tasks: 5 });
        assert_eq!(a.grace, Duration::from_secs(2));
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let e = admin("[admin]\nlisten = \"0.0.0.0:9090\"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("has no token") && e.contains("admin.toml:2:10"), "{e}");
        let a = admin("[admin]\nlisten = \"0.0.0.0:9090\"\ntoken-env = \"ADMIN\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.token.map(|t| t.0), Some(TokenSource::Env("ADMIN".into())));
        let e =
            admin("[admin]\nlisten = \"nowhere\"\ntoken-env = \"A\"\ntoken-file = \"f\"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not an address") && e.contains("not both"), "{e}");
    }
}
