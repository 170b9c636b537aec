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
//! - `e2ee.js`: end-to-end encryption: the worker that holds the room's
//!   MLS group, fed and watched by the page;
//! - `e2ee/worker.js`: that worker, which runs every encoded frame through
//!   the E2EE stage (plugins/e2ee-web) in `e2ee/`, the ES module and wasm
//!   that wasm-bindgen makes of it at build time.
//!
//! Every file is served `no-cache` with an `ETag` (a hash of its bytes): a
//! browser revalidates each time, so a new node's page is never mixed
//! with an old one's modules, and an unchanged file (the 3 MB wasm above
//! all) costs a `304 Not Modified`, not a download.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::hash::{Hash, Hasher};

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
    ("/e2ee.js", "text/javascript; charset=utf-8", include_bytes!("page/e2ee.js")),
    ("/e2ee/worker.js", "text/javascript; charset=utf-8", include_bytes!("page/e2ee-worker.js")),
    ("/e2ee/medianode_e2ee_web.js", "text/javascript; charset=utf-8", built::E2EE_JS),
    // `application/wasm`, or `WebAssembly.instantiateStreaming` refuses it.
    ("/e2ee/medianode_e2ee_web_bg.wasm", "application/wasm", built::E2EE_WASM),
];

/// A file's entity tag: a hash of its bytes, quoted.
pub fn etag(body: &[u8]) -> HeaderValue {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish())).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// One file as a response, or `304` when the browser has it already
/// (its `If-None-Match` names `tag`).
pub fn serve(request: &HeaderMap, content_type: &'static str, body: &'static [u8], tag: &HeaderValue) -> Response {
    let cached = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/").as_bytes() == tag.as_bytes()));
    let headers = [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")), (header::ETAG, tag.clone())];
    if cached {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, [(header::CONTENT_TYPE, content_type)], body).into_response()
}
