//! The web client: plain HTML, CSS and JavaScript modules, compiled into
//! the binary and served as they are (no build step, no runtime
//! dependency).
//!
//! - `index.html`, `style.css`: the page and its layout;
//! - `app.js`: the room's state, and what each message from the node does
//!   to it;
//! - `signaling.js`: the WebSocket client;
//! - `media.js`: the peer connection, mute, devices and `getStats()`;
//! - `ui.js`: roster, video grid, chat, connection panel, alerts.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Every file of the page: its path, content type and text.
pub const FILES: &[(&str, &str, &str)] = &[
    ("/", "text/html; charset=utf-8", include_str!("page/index.html")),
    ("/style.css", "text/css; charset=utf-8", include_str!("page/style.css")),
    ("/app.js", "text/javascript; charset=utf-8", include_str!("page/app.js")),
    ("/signaling.js", "text/javascript; charset=utf-8", include_str!("page/signaling.js")),
    ("/media.js", "text/javascript; charset=utf-8", include_str!("page/media.js")),
    ("/ui.js", "text/javascript; charset=utf-8", include_str!("page/ui.js")),
];

/// One file as a response. `no-cache`: a browser revalidates, so a new
/// node's page is never mixed with an old one's modules.
pub fn serve(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
