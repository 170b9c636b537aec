//! `[client]`: the room this node joins on an SFU node (an edge node).

use super::check::Cx;
use super::schema::{OneOrMany, RawClient};
use super::*;
use std::net::IpAddr;
use toml::Spanned;

/// `[client]`. The stage without `inputs` serves it: an E2EE stage, which
/// seals what the node publishes and opens what it receives.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub span: Span,
    /// `ws://host:port/ws`: one node, or a cluster's nodes (tried in turn
    /// when a line fails).
    pub servers: Vec<String>,
    pub room: String,
    pub user: String,
    pub media_ip: IpAddr,
}

/// Checks `[client]`; `None` after reporting what is wrong.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawClient>) -> Option<ClientConfig> {
    let c = raw.get_ref();
    let errors_before = cx.error_count();
    let servers = match c.server.get_ref() {
        OneOrMany::One(url) => vec![url.clone()],
        OneOrMany::Many(urls) => urls.clone(),
    };
    if servers.is_empty() {
        cx.report(cx.err(&c.server, "no server given", "e.g. server = [\"ws://10.0.0.1:8080/ws\", \"ws://10.0.0.2:8080/ws\"]"));
    }
    for url in servers.iter().filter(|url| !(url.starts_with("ws://") || url.starts_with("wss://"))) {
        cx.report(cx.err(&c.server, format!("`{url}` is not a WebSocket URL"), "e.g. server = \"ws://127.0.0.1:8080/ws\""));
    }
    for (key, value) in [("room", &c.room), ("user", &c.user)] {
        let v = value.get_ref();
        if v.is_empty() || v.len() > 128 {
            cx.report(cx.err(value, format!("{key} must be 1 to 128 characters"), format!("e.g. {key} = \"demo\"")));
        }
    }
    let media_ip = match &c.media_ip {
        None => Some(IpAddr::from([127, 0, 0, 1])),
        Some(ip) => server::ip_address(cx, ip),
    };
    let media_ip = media_ip.filter(|_| cx.error_count() == errors_before)?;
    Some(ClientConfig { span: raw.span(), servers, room: c.room.get_ref().clone(), user: c.user.get_ref().clone(), media_ip })
}
