//! Three headless Chromium windows (Debian's `chromium`, fake camera and
//! microphone) use the node's own room page as people would, and the test
//! checks what each page shows: the roster after every join, leave and
//! closed tab (within 1 s), the video grid, chat with its typing indicator
//! and delivered/read marks, mute (shown to the others, and the node
//! forwards nothing more for that track), the connection panel, and a
//! refused name. Each window's screenshot is saved under
//! `target/screenshots/`.
//!
//! Chromium is driven over the DevTools protocol with the WebSocket client
//! the other tests use: open a window, evaluate JavaScript in it.

use futures_util::{SinkExt, StreamExt};
use medianode::supervisor::crash_report::CrashReporter;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    pub(crate) devtools: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn launch() -> Browser {
    launch_with(&[])
}

/// Chromium with `extra` flags besides the ones every test needs.
pub(crate) fn launch_with(extra: &[&str]) -> Browser {
    let echo = std::env::var_os("MEDIANODE_CHROMIUM_LOG").is_some();
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
            // Three fake cameras, to switch between (Chromium's second is
            // a Y16 depth camera, which the encoder does not take; the
            // test switches to the third, MJPEG).
            "--use-fake-device-for-media-stream=device-count=3",
            // The SFU is on 127.0.0.1: let WebRTC use loopback, and show
            // real host candidates rather than mDNS names.
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--remote-debugging-port=0",
        ])
        .args(extra)
        // MEDIANODE_CHROMIUM_LOG=1: the browser's log and every console
        // message of its pages and workers, on the test's stderr.
        .args(if echo { &["--enable-logging=stderr", "--v=0"][..] } else { &[][..] })
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
            if echo {
                eprintln!("chromium: {line}");
            }
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let devtools = rx.recv_timeout(Duration::from_secs(30)).expect("chromium prints its DevTools address");
    Browser { child, _profile: profile, devtools }
}

/// A DevTools protocol connection: numbered commands, answers by number.
pub(crate) struct DevTools {
    pub(crate) ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    pub(crate) next_id: u64,
}

/// One browser window with the room page.
pub(crate) struct Tab {
    pub(crate) name: &'static str,
    target: Value,
    session: String,
}

impl DevTools {
    pub(crate) async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value, Value> {
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

    /// Opens `url` in a window of its own (so every page is visible, as
    /// side-by-side windows would be, and none is throttled as a
    /// background tab).
    pub(crate) async fn open(&mut self, name: &'static str, url: &str) -> Tab {
        let params = json!({"url": url, "newWindow": true, "width": 1280, "height": 900});
        let created = self.call(None, "Target.createTarget", params).await.expect("a window");
        let target = created["targetId"].clone();
        let attached = self.call(None, "Target.attachToTarget", json!({"targetId": target, "flatten": true})).await.expect("attached");
        Tab { name, target, session: attached["sessionId"].as_str().expect("session").to_string() }
    }

    /// Closes the window as a person would: no `leave`, the socket just goes.
    pub(crate) async fn close(&mut self, tab: &Tab) {
        self.call(None, "Target.closeTarget", json!({"targetId": tab.target})).await.expect("closes");
    }

    /// The expression's value; null while the page is still loading.
    pub(crate) async fn eval(&mut self, tab: &Tab, expression: &str) -> Value {
        let params = json!({"expression": expression, "awaitPromise": true, "returnByValue": true});
        match self.call(Some(&tab.session), "Runtime.evaluate", params).await {
            Ok(result) => result["result"]["value"].clone(),
            Err(_) => Value::Null,
        }
    }

    /// Waits until `expression` satisfies `ok`; returns how long it took.
    /// On timeout, fails with the last value and the page's state.
    pub(crate) async fn until(
        &mut self,
        tab: &Tab,
        what: &str,
        expression: &str,
        within: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let value = self.eval(tab, expression).await;
            if ok(&value) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let page = self.eval(tab, PAGE_STATE).await;
                panic!("{}: {what} not within {within:?}; last value {value}; page: {page}", tab.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Saves the window's screenshot as `target/screenshots/<name>.png`.
    pub(crate) async fn screenshot(&mut self, tab: &Tab, name: &str) {
        use base64::Engine as _;
        let shot = self.call(Some(&tab.session), "Page.captureScreenshot", json!({"format": "png", "captureBeyondViewport": true})).await;
        let data = shot.expect("a screenshot")["data"].as_str().map(str::to_string).expect("image data");
        let png = base64::engine::general_purpose::STANDARD.decode(data).expect("base64");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).parent().expect("the target dir").join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot saved");
    }
}

/// The participants list as the page shows it, sorted.
const ROSTER: &str = "[...document.querySelectorAll('[aria-label=participants] li')].map(li => li.dataset.user).sort().join(',')";
/// The video grid's tiles by member, sorted.
const TILES: &str = "[...document.querySelectorAll('#grid figure')].map(f => f.dataset.user).sort().join(',')";
/// The page's `readyState`, once the window has left its first
/// `about:blank` (which is `complete` too, and resolves no module).
pub(crate) const PAGE_LOADED: &str = "location.protocol === 'http:' ? document.readyState : 'not yet'";
/// What a failing check prints about the page.
pub(crate) const PAGE_STATE: &str = "JSON.stringify({status: document.getElementById('status').textContent, alert: document.getElementById('alert').textContent, \
    roster: document.getElementById('participants').innerText, errors: window.medianode && window.medianode.state.errors, \
    log: document.getElementById('log').textContent.slice(0, 2000)})";

pub(crate) fn is(expected: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v.as_str() == Some(expected)
}

/// The node's forwarded packet count for `user`'s track of `kind`
/// (`"audio"` or `"video"`).
pub(crate) async fn forwarded(sfu: &medianode::sfu::Sfu, user: &str, kind: &str) -> u64 {
    let rooms = sfu.rooms().await;
    let tracks = rooms.iter().flat_map(|r| &r.participants).filter(|p| p.user == user).flat_map(|p| &p.tracks);
    tracks.filter(|t| t.kind == kind).map(|t| t.forwarded).sum()
}

static PHONE: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}));
const PRESENCE_WITHIN: Duration = Duration::from_secs(1);
pub(crate) const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "the test holds every core for its whole length; no task of its runtime takes the lock")]
async fn three_browser_windows_share_a_room() {
    if std::env::var_os("RUST_LOG").is_some() {
        medianode::telemetry::init(medianode::telemetry::LogFormat::Text);
    }
    let mut config = medianode::config::default_pipeline().unwrap_or_else(|e| panic!("{e}"));
    if let Some(server) = config.server.as_mut() {
        server.listen.set_port(0);
    }
    let node =
        medianode::server::start(crate::common::runtime(), &config, &CrashReporter::new(None)).await.unwrap_or_else(|e| panic!("{e}"));
    let sfu = &node.sfu;
    let _cores = crate::common::loading_every_core();
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let base = format!("http://{}/?room=browsers&autojoin=1", node.server.addr);

    // Joins: each page sees itself, and the others see it within 1 s of
    // its own `joined`.
    let ada = dt.open("ada", &format!("{base}&user=ada")).await;
    dt.until(&ada, "ada alone", ROSTER, SETTLE, is("ada")).await;
    let bob = dt.open("bob", &format!("{base}&user=bob")).await;
    dt.until(&bob, "bob's roster", ROSTER, SETTLE, is("ada,bob")).await;
    let took = dt.until(&ada, "bob in ada's roster", ROSTER, PRESENCE_WITHIN, is("ada,bob")).await;
    eprintln!("bob's join shown at ada within {took:?}");
    let carol = dt.open("carol", &format!("{base}&user=carol")).await;
    dt.until(&carol, "carol's roster", ROSTER, SETTLE, is("ada,bob,carol")).await;
    for tab in [&ada, &bob] {
        let took = dt.until(tab, "carol in the roster", ROSTER, PRESENCE_WITHIN, is("ada,bob,carol")).await;
        eprintln!("carol's join shown at {} within {took:?}", tab.name);
    }

    // Media: a tile per member, and every page receives audio and video.
    let counts = "window.medianode.inbound().then(c => c.audio > 0 && c.video > 0 ? c : null)";
    for tab in [&ada, &bob, &carol] {
        dt.until(tab, "a tile per member", TILES, SETTLE, is("ada,bob,carol")).await;
        dt.until(tab, "inbound audio and video", counts, SETTLE, |v| !v.is_null()).await;
    }

    // Chat: typing shows at the others, the message arrives, typing
    // clears, and ada's message comes back delivered and read by both.
    dt.eval(
        &ada,
        "(() => { const t = document.getElementById('chat-text'); t.value = 'hello <b>room</b>'; t.dispatchEvent(new Event('input')); })()",
    )
    .await;
    let typing = "document.getElementById('typing').textContent";
    for tab in [&bob, &carol] {
        dt.until(tab, "ada's typing indicator", typing, SETTLE, is("ada is typing…")).await;
    }
    dt.eval(&ada, "document.getElementById('chat-send').click()").await;
    let last_message = "(() => { const li = document.querySelector('#messages li:last-child'); \
        return li ? li.querySelector('b').textContent + ': ' + li.querySelector('.text').textContent : null; })()";
    for tab in [&bob, &carol] {
        dt.until(tab, "ada's message, as text", last_message, SETTLE, is("ada: hello <b>room</b>")).await;
        dt.until(tab, "the typing indicator cleared on send", typing, SETTLE, is("")).await;
    }
    let marks = "document.querySelector('#messages li.mine .marks').textContent";
    dt.until(&ada, "delivered and read marks", marks, SETTLE, is("✓✓ read by bob, carol")).await;
    let receipts = "(() => { const m = [...window.medianode.state.messages.values()].find(m => m.mine); \
        return [...m.delivered].sort().join(',') + '/' + [...m.read].sort().join(','); })()";
    assert_eq!(dt.eval(&ada, receipts).await, json!("bob,carol/bob,carol"));
    // A typing indicator with no message after it clears by itself.
    dt.eval(&carol, "(() => { const t = document.getElementById('chat-text'); t.value = 'hm'; t.dispatchEvent(new Event('input')); })()")
        .await;
    dt.until(&ada, "carol's typing indicator", typing, SETTLE, is("carol is typing…")).await;
    dt.until(&ada, "carol's typing indicator clears", typing, Duration::from_secs(6), is("")).await;

    // Mute: bob's microphone off shows at the others, and the node's
    // forwarded count for his audio stops while his video goes on.
    dt.eval(&bob, "document.getElementById('mute-audio').click()").await;
    let bob_item = "document.querySelector('[aria-label=participants] li[data-user=bob] .marks')?.textContent ?? ''";
    for tab in [&ada, &carol] {
        dt.until(tab, "bob shown muted", bob_item, PRESENCE_WITHIN * 5, |v| v.as_str().is_some_and(|s| s.contains("microphone off"))).await;
    }
    let deadline = Instant::now() + SETTLE;
    let (mut audio, mut video_from) = (forwarded(sfu, "bob", "audio").await, forwarded(sfu, "bob", "video").await);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (a, v) = (forwarded(sfu, "bob", "audio").await, forwarded(sfu, "bob", "video").await);
        if a != audio {
            (audio, video_from) = (a, v);
        } else if v >= video_from + 60 {
            break; // 60 video copies forwarded meanwhile, and no audio
        }
        assert!(Instant::now() < deadline, "bob's audio still forwarded after his mute: {a} (video {v})");
    }
    dt.eval(&bob, "document.getElementById('mute-audio').click()").await;
    let deadline = Instant::now() + SETTLE;
    while forwarded(sfu, "bob", "audio").await < audio + 50 {
        assert!(Instant::now() < deadline, "bob's audio not forwarded again after unmuting");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dt.until(&ada, "bob shown unmuted", bob_item, PRESENCE_WITHIN * 5, |v| v.as_str().is_some_and(|s| !s.contains("microphone off"))).await;
    // Carol's camera off stays, for the screenshots.
    dt.eval(&carol, "document.getElementById('mute-video').click()").await;
    dt.until(&ada, "carol's camera shown off", "document.querySelector('li[data-user=carol] .marks')?.textContent ?? ''", SETTLE, |v| {
        v.as_str().is_some_and(|s| s.contains("camera off"))
    })
    .await;

    // Device switches: ada changes microphone and camera without
    // renegotiating, and the node goes on forwarding both.
    let offer_before = dt.eval(&ada, "window.medianode.media.pc.localDescription.sdp").await;
    for (kind, pick) in [("audio", "!o.selected"), ("video", "o.label === 'fake_device_2'")] {
        let switch = format!(
            "(() => {{ const s = document.getElementById('{kind}-device'); const other = [...s.options].find(o => {pick}); \
            if (!other || other.selected) return null; s.value = other.value; s.dispatchEvent(new Event('change')); return other.value; }})()"
        );
        let chosen = dt.eval(&ada, &switch).await;
        assert!(chosen.is_string(), "ada's page offers another {kind} device");
        let using = format!("window.medianode.media.tracks.{kind}.getSettings().deviceId === {chosen}");
        dt.until(&ada, &format!("the other {kind} device in use"), &using, SETTLE, |v| v == &json!(true)).await;
        let from = forwarded(sfu, "ada", kind).await;
        let deadline = Instant::now() + SETTLE;
        while forwarded(sfu, "ada", kind).await < from + 60 {
            if Instant::now() >= deadline {
                let out = dt.eval(&ada, "window.medianode.media.pc.getStats().then(r => { const o = []; r.forEach(s => { if (s.type === 'outbound-rtp' && s.kind === 'video') o.push(JSON.stringify([s.rid, s.packetsSent, s.frameWidth, s.active, s.qualityLimitationReason, s.encoderImplementation, s.framesEncoded])); }); return o.join(' '); })").await;
                panic!("ada's {kind} not forwarded after switching devices: {out}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(dt.eval(&ada, "window.medianode.media.pc.localDescription.sdp").await, offer_before, "no renegotiation");

    // The connection panel: bitrate both ways and a round-trip time.
    let stats = "(() => { const s = window.medianode.state.stats; return s && s.send.kbps > 0 && s.receive.kbps > 0 && s.rttMs > 0 \
        ? document.getElementById('send-rate').textContent + ' / ' + document.getElementById('rtt').textContent : null; })()";
    for tab in [&ada, &bob, &carol] {
        dt.until(tab, "bitrate and round trip in the panel", stats, SETTLE, |v| !v.is_null()).await;
        eprintln!("{} connection panel: {}", tab.name, dt.eval(tab, stats).await);
    }
    for tab in [&ada, &bob, &carol] {
        dt.screenshot(tab, &format!("room-{}", tab.name)).await;
    }
    // The same room at phone width: one column, video first.
    dt.call(Some(&bob.session), "Emulation.setDeviceMetricsOverride", PHONE.clone()).await.expect("phone width");
    dt.screenshot(&bob, "room-bob-phone").await;
    dt.call(Some(&bob.session), "Emulation.clearDeviceMetricsOverride", json!({})).await.expect("back to the window");

    // A taken name: the page says so where the user looks, in words, and
    // the room is as it was.
    let again = dt.open("ada-again", &format!("{base}&user=ada")).await;
    dt.call(
        Some(&again.session),
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": true}),
    )
    .await
    .expect("phone width");
    let alert = "(() => { const a = document.getElementById('alert'); return a.hidden ? null : a.textContent; })()";
    dt.until(&again, "the refusal on the page", alert, SETTLE, |v| v.as_str().is_some_and(|s| s.contains("already in use"))).await;
    dt.screenshot(&again, "refused-name-phone").await;
    assert_eq!(dt.eval(&ada, ROSTER).await, json!("ada,bob,carol"));

    // Leaving, by the button and by closing the window.
    dt.eval(&carol, "document.getElementById('leave').click()").await;
    for tab in [&ada, &bob] {
        dt.until(tab, "carol gone after leaving", ROSTER, PRESENCE_WITHIN, is("ada,bob")).await;
        dt.until(tab, "carol's tile gone", TILES, PRESENCE_WITHIN, is("ada,bob")).await;
    }
    dt.close(&bob).await;
    let took = dt.until(&ada, "bob gone after his window closed", ROSTER, PRESENCE_WITHIN, is("ada")).await;
    eprintln!("bob's closed window shown at ada within {took:?}");
    drop(browser);
}

/// The default node in a process of its own on `port`, serving the page.
fn sfu_child(port: u16) -> (crate::daemon::Node, std::net::SocketAddr) {
    let pipeline = medianode::config::DEFAULT_PIPELINE.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    let mut node = crate::daemon::Node::spawn_under_load(tempfile::tempdir().expect("tempdir"), &pipeline);
    let admin = crate::daemon::logged_address(&mut node, "admin API on http://");
    node.wait_for("serving the web client on http://");
    (node, admin)
}

/// Two windows in a room; the node drains and a new process takes its
/// port. Both pages reconnect by themselves (backoff with jitter), join
/// again, publish again, and see and hear each other again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "the test holds every core for its whole length; no task of its runtime takes the lock")]
async fn two_windows_come_back_after_the_node_restarts() {
    let _cores = crate::common::loading_every_core();
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let (mut first, admin) = tokio::task::block_in_place(|| sfu_child(port));
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let base = format!("http://127.0.0.1:{port}/?room=restart&autojoin=1");
    let tabs = [dt.open("ada", &format!("{base}&user=ada")).await, dt.open("bob", &format!("{base}&user=bob")).await];
    // Media grows over half a second, on the page's current connection.
    let flowing = "(async () => { const s = window.medianode.state; if (s.connection !== 'joined') return null; \
        const a = await window.medianode.inbound(); await new Promise(r => setTimeout(r, 500)); \
        const b = await window.medianode.inbound(); return b.audio > a.audio && b.video > a.video ? s.reconnects : null; })()";
    for tab in &tabs {
        dt.until(tab, "the other in the roster", ROSTER, SETTLE, is("ada,bob")).await;
        dt.until(tab, "media from the other", flowing, SETTLE, |v| v == &json!(0)).await;
    }

    let drained = Instant::now();
    assert_eq!(crate::admin::post(admin, "/drain").await.0, 202);
    while !matches!(first.child.try_wait(), Ok(Some(_))) {
        assert!(drained.elapsed() < Duration::from_secs(15), "the node did not exit:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a child's exit
    }
    let exited = drained.elapsed();
    for tab in &tabs {
        dt.until(tab, "the page says it is reconnecting", "window.medianode.state.connection", SETTLE, is("reconnecting")).await;
    }
    let (_second, _) = tokio::task::block_in_place(|| sfu_child(port));
    let serving = drained.elapsed();
    for tab in &tabs {
        dt.until(tab, "the other in the roster again", ROSTER, SETTLE, is("ada,bob")).await;
        dt.until(tab, "media from the other again, after one rejoin", flowing, SETTLE, |v| v == &json!(1)).await;
    }
    let recovered = drained.elapsed();
    eprintln!(
        "node restart: drained and exited in {exited:?}; the new process served at {serving:?}; both windows saw and heard each \
         other again at {recovered:?} ({:?} after the new node served)",
        recovered - serving
    );
    for tab in &tabs {
        dt.screenshot(tab, &format!("reconnected-{}", tab.name)).await;
    }
}

/// The page's E2EE module (plugins/e2ee-web, as the node serves it) in
/// Chromium: two members join one room over real WebSockets through the
/// node's MLS delivery service, agree on an epoch and a safety number, and
/// open each other's sealed frames. Prints the cost per 1200-byte frame
/// (seal + open) in the browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_e2ee_module_runs_in_the_browser() {
    let node = crate::browser_e2ee::default_node().await;
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    // The room page without joining: only its origin (and its headers) matter.
    let tab = dt.open("e2ee", &format!("http://{}/?room=other", node.server.addr)).await;
    dt.until(&tab, "the page loaded", PAGE_LOADED, SETTLE, is("complete")).await;
    let script = r#"(async () => { try {
        const m = await import('/e2ee/medianode_e2ee_web.js');
        await m.default();
        const member = (user) => new Promise((resolve) => {
            const me = new m.Member('e2ee', user, '{"aead": "wasm"}');
            const ws = new WebSocket(`ws://${location.host}/ws`);
            ws.onopen = () => ws.send(JSON.stringify({type: 'join', room: 'e2ee', user, e2ee: true}));
            ws.onmessage = (e) => { for (const out of me.signal(e.data)) ws.send(out); };
            resolve(me);
        });
        const ann = await member('ann');
        const settled = () => new Promise(r => setTimeout(r, 20));
        while (ann.epoch() === undefined) await settled();
        const bob = await member('bob');
        const deadline = Date.now() + 10000;
        while (!(bob.epoch() !== undefined && ann.epoch() === bob.epoch() && ann.members().length === 2)) {
            if (Date.now() > deadline) return {error: 'no agreement', ann: ann.epoch(), bob: bob.epoch()};
            await settled();
        }
        const frame = new Uint8Array(1200).fill(0x5a);
        const sealed = ann.seal(frame);
        const opened = bob.open(sealed);
        const n = 2000;
        const t = performance.now();
        for (let i = 0; i < n; i++) bob.open(ann.seal(frame));
        const us = (performance.now() - t) * 1000 / n;
        return {
            epoch: Number(ann.epoch()), same: ann.safetyNumber() === bob.safetyNumber(), safety: ann.safetyNumber(),
            ciphertext: !sealed.slice(sealed.length - 1200).every(b => b === 0x5a),
            opened: opened !== undefined && opened.length === 1200 && opened.every(b => b === 0x5a),
            plaintextRefused: bob.open(frame) === undefined, us,
        };
    } catch (e) { return {error: String(e), stack: e.stack}; } })()"#;
    let result = dt.eval(&tab, script).await;
    assert!(result.get("error").is_none() && !result.is_null(), "{result}");
    assert_eq!(result["same"], json!(true), "one safety number: {result}");
    assert!(result["epoch"].as_u64().is_some_and(|e| e >= 1), "{result}");
    assert_eq!(result["ciphertext"], json!(true), "{result}");
    assert_eq!(result["opened"], json!(true), "{result}");
    assert_eq!(result["plaintextRefused"], json!(true), "{result}");
    eprintln!(
        "e2ee in Chromium: epoch {}, safety number {}; seal + open of a 1200-byte frame: {:.1} us",
        result["epoch"],
        result["safety"],
        result["us"].as_f64().unwrap_or(f64::NAN)
    );
}
