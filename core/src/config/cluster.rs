//! `[cluster]`: server nodes that share rooms through Redis.

use super::check::Cx;
use super::schema::RawCluster;
use super::*;
use toml::Spanned;

/// `[cluster]`. A node with it registers in Redis, finds each room's home
/// there and relays media to and from the other nodes of its rooms.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub span: Span,
    /// `redis://host:port`
    pub redis: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Where clients and other nodes reach this node's signaling; `None`:
    /// `ws://<the address [server] listens on>/ws`, known once it is bound.
    pub url: Option<String>,
}

/// Checks `[cluster]`; `None` after reporting what is wrong.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawCluster>, server: Option<&ServerConfig>) -> Option<ClusterConfig> {
    let c = raw.get_ref();
    let errors_before = cx.error_count();
    let redis = c.redis.get_ref();
    if !(redis.starts_with("redis://") || redis.starts_with("rediss://")) {
        cx.report(cx.err(&c.redis, format!("`{redis}` is not a Redis URL"), "e.g. redis = \"redis://127.0.0.1:6379\""));
    }
    let node = c.node.get_ref();
    let fine = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.');
    if node.is_empty() || node.len() > 64 || !node.chars().all(fine) {
        cx.report(cx.err(&c.node, "node must be 1 to 64 letters, digits, `-`, `_` or `.`", "e.g. node = \"node-a\""));
    }
    if let Some(url) = &c.url {
        let u = url.get_ref();
        if !(u.starts_with("ws://") || u.starts_with("wss://")) {
            cx.report(cx.err(url, format!("`{u}` is not a WebSocket URL"), "e.g. url = \"ws://10.0.0.5:8080/ws\""));
        }
    } else if server.is_some_and(|s| s.listen.ip().is_unspecified()) {
        cx.report(cx.err(
            raw,
            "the other nodes cannot reach a node listening on every address without its URL",
            "add url = \"ws://<this node's address>:<port>/ws\" to [cluster]",
        ));
    }
    (cx.error_count() == errors_before).then(|| ClusterConfig {
        span: raw.span(),
        redis: redis.clone(),
        node: node.clone(),
        url: c.url.as_ref().map(|u| u.get_ref().clone()),
    })
}
