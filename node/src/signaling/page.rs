//! The web client: plain HTML, CSS and JavaScript modules, compiled into
//! the binary and served as they are (no build step, no runtime
//! dependency).
//!
//! - `index.html`, `style.css`: the page and its layout;
//! - `app.js`: the room's state, and what each message from the node does
//!   to it;
//! - `signaling.js`: the WebSocket client;
//! - `media.js`: the peer connection, mute, devices and `getStats()`;
//! - `ui.js`: roster, video grid, chat, connection panel, alerts;
//! - `e2ee/`: the E2EE stage for the page (plugins/e2ee-web), as the ES
//!   module and wasm that wasm-bindgen makes of it at build time.

use axum::http::header;
use axum::response::{IntoResponse, Response};

mod built {
    include!(concat!(env!("OUT_DIR"), "/web.rs"));
}

/// Every file of the page: its path, content type and bytes.
pub const FILES: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("page/index.html")),
    ("/style.css", "text/css; charset=utf-8", include_bytes!("page/style.css")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("page/app.js")),
    ("/signaling.js", "text/javascript; charset=utf-8", include_bytes!("page/signaling.js")),
    ("/media.js", "text/javascript; charset=utf-8", include_bytes!("page/media.js")),
    ("/ui.js", "text/javascript; charset=utf-8", include_bytes!("page/ui.js")),
    ("/e2ee/medianode_e2ee_web.js", "text/javascript; charset=utf-8", built::E2EE_JS),
    // `application/wasm`, or `WebAssembly.instantiateStreaming` refuses it.
    ("/e2ee/medianode_e2ee_web_bg.wasm", "application/wasm", built::E2EE_WASM),
];

/// One file as a response. `no-cache`: a browser revalidates, so a new
/// node's page is never mixed with an old one's modules.
pub fn serve(content_type: &'static str, body: &'static [u8]) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
