//! Two headless Chromium pages (Debian's `chromium`, fake camera and
//! microphone) join one room through the node's own page, and each page's
//! `getStats()` shows inbound audio and video packets increasing.
//!
//! Chromium is driven over the DevTools protocol with the WebSocket client
//! the other tests use: create a page, evaluate JavaScript in it.

use futures_util::{SinkExt, StreamExt};
use medianode::supervisor::crash_report::CrashReporter;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    devtools: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch() -> Browser {
    assert!(std::path::Path::new(CHROMIUM).exists(), "the browser test needs Debian's chromium: apt-get install chromium");
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            // The SFU is on 127.0.0.1: let WebRTC use loopback, and show
            // real host candidates rather than mDNS names.
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let devtools = rx.recv_timeout(Duration::from_secs(30)).expect("chromium prints its DevTools address");
    Browser { child, _profile: profile, devtools }
}

/// A DevTools protocol connection: numbered commands, answers by number.
struct DevTools {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
}

impl DevTools {
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(command.to_string())).await.expect("devtools send");
        loop {
            let message = tokio::time::timeout(Duration::from_secs(20), self.ws.next()).await.expect("devtools answers");
            let Some(Ok(Message::Text(text))) = message else { panic!("devtools closed") };
            let v: Value = serde_json::from_str(&text).expect("JSON");
            if v["id"] == id {
                return match v.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(v["result"].clone()),
                };
            }
        }
    }

    /// Opens `url` in a new page; returns the page's session.
    async fn open(&mut self, url: &str) -> String {
        let target = self.call(None, "Target.createTarget", json!({"url": url})).await.expect("a page");
        let attached =
            self.call(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true})).await.expect("attached");
        attached["sessionId"].as_str().expect("session").to_string()
    }

    /// The expression's value; null while the page is still loading.
    async fn eval(&mut self, session: &str, expression: &str) -> Value {
        let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
        match self.call(Some(session), "Runtime.evaluate", params).await {
            Ok(result) => result["result"]["value"].clone(),
            Err(_) => Value::Null,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browser_pages_see_and_hear_each_other() {
    if std::env::var_os("RUST_LOG").is_some() {
        medianode::telemetry::init(medianode::telemetry::LogFormat::Text);
    }
    let mut config = medianode::config::default_pipeline().unwrap_or_else(|e| panic!("{e}"));
    if let Some(server) = config.server.as_mut() {
        server.listen.set_port(0);
    }
    let node =
        medianode::server::start(crate::common::runtime(), &config, &CrashReporter::new(None)).await.unwrap_or_else(|e| panic!("{e}"));
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut devtools = DevTools { ws, next_id: 0 };
    let base = format!("http://{}/?room=browsers&autojoin=1", node.server.addr);
    let pages = [devtools.open(&format!("{base}&user=ada")).await, devtools.open(&format!("{base}&user=bob")).await];

    let counts = "window.medianode ? window.medianode.inbound() : {audio: 0, video: 0}";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first: Vec<Value> = Vec::new();
    loop {
        let mut now = Vec::new();
        for page in &pages {
            now.push(devtools.eval(page, counts).await);
        }
        let flowing = now.iter().all(|c| c["audio"].as_u64() > Some(0) && c["video"].as_u64() > Some(0));
        if flowing && first.is_empty() {
            first = now.clone();
        } else if flowing {
            let grew =
                first.iter().zip(&now).all(|(a, b)| b["audio"].as_u64() > a["audio"].as_u64() && b["video"].as_u64() > a["video"].as_u64());
            if grew {
                break;
            }
        }
        if Instant::now() > deadline {
            let mut states = Vec::new();
            for page in &pages {
                states.push(
                    devtools
                        .eval(page, "document.getElementById('state').textContent + ' | ' + document.getElementById('log').textContent")
                        .await,
                );
                if std::env::var_os("RUST_LOG").is_some() {
                    let debug = "(async () => { const pc = window.medianode.pc; const out = []; (await pc.getStats()).forEach(s => { if (s.type === 'inbound-rtp' || s.type === 'codec') out.push(JSON.stringify(s)); }); return out.join('\\n') + '\\n' + pc.getTransceivers().map(t => [t.mid, t.receiver.track.kind, t.currentDirection].join(',')).join(' ; ') + '\\n' + pc.remoteDescription.sdp; })()";
                    eprintln!("{}", devtools.eval(page, debug).await.as_str().unwrap_or("?"));
                }
            }
            panic!("inbound packets never grew on both pages: {now:?}; pages: {states:?}; router: {:?}", node.sfu.stats());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
