//! The admin API ([`medianode::admin`]) on a node serving real WebRTC
//! peers: what each route answers, the bearer token, and a real Prometheus
//! server (Debian's `prometheus`) scraping `/metrics` while media flows.

use crate::webrtc_peers::{peer_at, until_flowing};
use medianode::admin::{self, NodeView};
use medianode::supervisor::crash_report::CrashReporter;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// An HTTP/1.0 GET (no chunking, the server closes): status and body.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    try_get(addr, path, token).await.unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

pub async fn try_get(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, token).await
}

/// An HTTP/1.0 POST without a body.
pub async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "POST", path, None).await.unwrap_or_else(|e| panic!("POST http://{addr}{path}: {e}"))
}

async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body).to_string();
    Ok((status, body))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The default pipeline's node on free ports, with its admin API.
async fn node(token: Option<&str>) -> (medianode::server::Running, admin::Admin) {
    let mut config = medianode::config::default_pipeline().unwrap_or_else(|e| panic!("{e}"));
    if let Some(server) = config.server.as_mut() {
        server.listen.set_port(0);
    }
    let running =
        medianode::server::start(crate::common::runtime(), &config, &CrashReporter::new(None)).await.unwrap_or_else(|e| panic!("{e}"));
    let view = NodeView::default();
    view.add_server(&running);
    let admin = admin::start("127.0.0.1:0".parse().expect("addr"), token, view).await.expect("admin listens");
    (running, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_shows_stages_rooms_and_metrics() {
    let token = "an-admin-token-of-some-length";
    let (running, admin) = node(Some(token)).await;
    let publisher = peer_at(running.server.addr, "room", "alice", true).await;
    let subscriber = peer_at(running.server.addr, "room", "bob", false).await;
    until_flowing(&publisher, std::slice::from_ref(&subscriber)).await;
    // The node tells each peer its ICE state once it has kept it (for the
    // admin API and /metrics below).
    for peer in [&publisher, &subscriber] {
        let connected = |seen: &crate::webrtc_peers::Seen| {
            seen.messages.lock().expect("lock").iter().any(|m| m["type"] == "media-state" && m["state"] == "connected")
        };
        peer.seen.until("the node's ICE connected", Duration::from_secs(10), connected).await;
    }

    assert_eq!(get(admin.addr, "/health", None).await.0, 401, "no token, no answer");
    assert_eq!(get(admin.addr, "/health", Some("wrong-token-wrong-token")).await.0, 401);
    let (status, body) = get(admin.addr, "/health", Some(token)).await;
    assert_eq!((status, json(&body)["status"].as_str()), (200, Some("ok")));
    let (status, body) = get(admin.addr, "/ready", Some(token)).await;
    assert_eq!(status, 200, "{body}");

    let (_, body) = get(admin.addr, "/stages", Some(token)).await;
    let stages = json(&body);
    let ids: Vec<&str> = stages.as_array().map(|a| a.iter().filter_map(|s| s["id"].as_str()).collect()).unwrap_or_default();
    assert_eq!(ids, ["rooms", "forward"]);
    let (status, body) = get(admin.addr, "/stages/forward", Some(token)).await;
    let forward = json(&body);
    assert_eq!(status, 200);
    assert_eq!(forward["state"], "serving");
    assert_eq!(forward["plugin"], "stock:forward");
    assert_eq!(forward["digest"].as_str().map(str::len), Some(64), "{forward}");
    assert!(forward["calls"].as_u64() > Some(0), "{forward}");
    assert_eq!(get(admin.addr, "/stages/nope", Some(token)).await.0, 404);

    let (_, body) = get(admin.addr, "/rooms", Some(token)).await;
    let rooms = json(&body);
    assert_eq!(rooms[0]["room"], "room", "{rooms}");
    assert_eq!(rooms[0]["participants"][0]["user"], "alice");
    assert_eq!(rooms[0]["participants"][0]["ice"], "connected");
    assert!(rooms[0]["participants"][0]["tracks"][0]["forwarded"].as_u64() > Some(0), "{rooms}");

    let lines = [
        "medianode_stage_calls_total{stage=\"forward\"}",
        "medianode_stage_faults_total{stage=\"forward\",kind=\"panic\"} 0",
        "medianode_stage_state{stage=\"forward\",state=\"serving\"} 1",
        "medianode_stage_call_seconds_bucket{le=\"+Inf\",stage=\"forward\"}",
        "medianode_sfu_participants 2",
        "medianode_sfu_peer_connections{state=\"connected\"} 2",
        "medianode_sfu_packets_in_total",
        "medianode_sfu_outbound_queue_bytes",
        "medianode_sfu_keyframe_requests_total",
        "medianode_signaling_messages_handled_total{type=\"join\"} 2",
        "medianode_signaling_messages_handled_total{type=\"offer\"}",
        "medianode_signaling_connections 2",
        "medianode_process_resident_memory_bytes",
        "medianode_tokio_tasks",
        "# EOF",
    ];
    let (status, text) = get(admin.addr, "/metrics", Some(token)).await;
    assert_eq!(status, 200);
    for line in lines {
        assert!(text.contains(line), "/metrics lacks {line}:\n{text}");
    }
}

/// `POST /stages/forward/restart`: a fresh instance takes over, counted as
/// a restart (no fault), and packets keep reaching the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restarts_a_stage_and_media_goes_on() {
    let (running, admin) = node(None).await;
    let publisher = peer_at(running.server.addr, "room", "alice", true).await;
    let subscriber = peer_at(running.server.addr, "room", "bob", false).await;
    until_flowing(&publisher, std::slice::from_ref(&subscriber)).await;
    let restarts = || async { json(&get(admin.addr, "/stages/forward", None).await.1)["restarts"].as_u64() };
    let before = restarts().await;
    assert_eq!(post(admin.addr, "/stages/forward/restart").await.0, 202);
    assert_eq!(post(admin.addr, "/stages/nope/restart").await.0, 404);
    let deadline = Instant::now() + Duration::from_secs(10);
    while restarts().await <= before {
        assert!(Instant::now() < deadline, "the stage never restarted");
        publisher.send_audio(1000, 1, Duration::ZERO).await; // a call, for a stage that waits for one
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, body) = get(admin.addr, "/stages/forward", None).await;
    let forward = json(&body);
    assert_eq!((forward["state"].as_str(), forward["faults"].as_u64()), (Some("serving"), Some(0)), "{forward}");
    let received = subscriber.received();
    publisher.send_audio(2000, 50, Duration::from_millis(2)).await;
    let more = |s: &crate::webrtc_peers::Seen| s.packets.load(Ordering::Relaxed) >= received + 45;
    subscriber.seen.until("packets after the restart", Duration::from_secs(10), more).await;
}

/// The value of a Prometheus instant query's first series, if any.
async fn query(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let encoded: String = promql
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    // Refused until Prometheus listens.
    let (status, body) = try_get(prometheus, &format!("/api/v1/query?query={encoded}"), None).await.ok()?;
    if status != 200 {
        return None;
    }
    json(&body)["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock, reason = "Prometheus's start loads both cores; no task of this runtime takes the lock")]
async fn prometheus_scrapes_a_stage_and_the_sfu_while_media_flows() {
    let _cores = crate::common::loading_every_core();
    assert!(std::path::Path::new(PROMETHEUS).exists(), "this test needs Debian's prometheus: apt-get install prometheus");
    let (running, admin) = node(None).await;
    let publisher = peer_at(running.server.addr, "room", "alice", true).await;
    let subscriber = peer_at(running.server.addr, "room", "bob", false).await;
    until_flowing(&publisher, std::slice::from_ref(&subscriber)).await;
    // Media keeps flowing while Prometheus scrapes.
    let flowing = Arc::new(AtomicBool::new(true));
    let sender = {
        let flowing = flowing.clone();
        tokio::spawn(async move {
            let mut sequence = 0u16;
            while flowing.load(Ordering::Relaxed) {
                publisher.send_audio(sequence, 10, Duration::from_millis(10)).await;
                sequence = sequence.wrapping_add(10);
            }
        })
    };

    let dir = tempfile::tempdir().expect("dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
    let prometheus_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: medianode\n    static_configs:\n      - targets: ['{}']\n",
        admin.addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let mut prometheus = Command::new(PROMETHEUS)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address={prometheus_addr}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).expect("log"))
        .spawn()
        .expect("prometheus starts");

    let calls = "medianode_stage_calls_total{stage=\"forward\"}";
    let packets = "medianode_sfu_packets_in_total";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first: Option<(f64, f64)> = None;
    let result = loop {
        if let (Some(c), Some(p)) = (query(prometheus_addr, calls).await, query(prometheus_addr, packets).await) {
            match first {
                None if c > 0.0 && p > 0.0 => first = Some((c, p)),
                Some((c0, p0)) if c > c0 && p > p0 => break Ok(((c0, p0), (c, p))),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            break Err(first);
        }
        tokio::time::sleep(Duration::from_millis(250)).await; // Prometheus scrapes once a second
    };
    flowing.store(false, Ordering::Relaxed);
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = sender.await;
    match result {
        Ok((before, after)) => eprintln!("Prometheus saw (stage calls, SFU packets in) go from {before:?} to {after:?}"),
        Err(seen) => {
            let log = std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("Prometheus never saw both series increase (first: {seen:?}); its log:\n{log}");
        }
    }
}
