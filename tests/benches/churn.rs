//! Churn: a node in a process of its own (this benchmark run again as the
//! child) serves rooms that real WebRTC peers (webrtc-rs, loopback) join,
//! talk in and leave, over and over, while its stages are restarted
//! through the admin API. It prints the node's resident memory, open file
//! descriptors and async tasks at the start (after one warm-up round),
//! at their peak and at the end (once the last room has emptied): a node
//! that leaks grows round after round, so the end must be within 5% of the
//! start.
//!
//! Each round: 4 rooms of 3 (one publisher, two subscribers) join, audio
//! flows to every subscriber, 50 more packets, everyone leaves; every 5th
//! round the forwarding stage is restarted, every 7th the signaling stage.
//!
//! Run: `cargo bench -p medianode-tests --bench churn` (10 minutes;
//! `CHURN_SECONDS=60` for a shorter run).

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../all/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../node/benches/common/mod.rs"]
mod results;
#[path = "../all/webrtc_peers.rs"]
#[allow(dead_code)]
mod webrtc_peers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc_peers::{Peer, peer_at, until_flowing};

const CHILD_VAR: &str = "MEDIANODE_CHURN_NODE";
const ROOMS: usize = 4;

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_VAR).map(PathBuf::from) {
        medianode::telemetry::init(medianode::telemetry::LogFormat::Text);
        let options = medianode::daemon::RunOptions {
            crash_dir: dir.join("crash"),
            cache_dir: None,
            admin: Some(Some(SocketAddr::from(([127, 0, 0, 1], 0)))),
            watch: false,
        };
        std::process::exit(if medianode::daemon::run(Some(&dir.join("pipeline.toml")), &options) == std::process::ExitCode::SUCCESS {
            0
        } else {
            1
        });
    }
    let seconds: u64 = std::env::var("CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(churn(Duration::from_secs(seconds)));
}

/// The node's resource use at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Use {
    rss: u64,
    fds: u64,
    tasks: u64,
}

impl Use {
    fn max(self, other: Use) -> Use {
        Use { rss: self.rss.max(other.rss), fds: self.fds.max(other.fds), tasks: self.tasks.max(other.tasks) }
    }
}

async fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").map_or(String::new(), |(_, body)| body.to_string())
}

async fn sample(pid: u32, admin: SocketAddr) -> Use {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let metrics = http(admin, "GET", "/metrics").await;
    let tasks = metrics.lines().find_map(|l| l.strip_prefix("medianode_tokio_tasks ")).and_then(|v| v.trim().parse::<f64>().ok());
    Use { rss: rss.unwrap_or(0) * 1024, fds, tasks: tasks.unwrap_or(0.0) as u64 }
}

fn logged(log: &Path, marker: &str) -> SocketAddr {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(at) = text.find(marker) {
            let rest = &text[at + marker.len()..];
            if let Some(addr) = rest.split(|c: char| c.is_whitespace() || c == '/').next().and_then(|a| a.parse().ok()) {
                return addr;
            }
        }
        assert!(Instant::now() < until, "the node never logged {marker:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(50)); // polling a file the child writes
    }
}

/// One round: every room fills, talks and empties.
async fn round(server: SocketAddr, admin: SocketAddr, n: u64) {
    let mut rooms = Vec::new();
    for r in 0..ROOMS {
        let room = format!("churn-{n}-{r}");
        let publisher = peer_at(server, &room, "pub", true).await;
        let subscribers = vec![peer_at(server, &room, "sub1", false).await, peer_at(server, &room, "sub2", false).await];
        rooms.push((publisher, subscribers));
    }
    for (publisher, subscribers) in &rooms {
        until_flowing(publisher, subscribers).await;
        publisher.send_audio(1000, 50, Duration::from_millis(1)).await;
    }
    if n % 5 == 4 {
        http(admin, "POST", "/stages/forward/restart").await;
    }
    if n % 7 == 6 {
        http(admin, "POST", "/stages/rooms/restart").await;
    }
    for (publisher, subscribers) in rooms {
        publisher.close().await;
        for s in subscribers {
            Peer::close(s).await;
        }
    }
}

async fn churn(length: Duration) {
    let dir = tempfile::tempdir().unwrap();
    // The default pipeline (pipelines/sfu.toml) on free ports.
    let pipeline = medianode::config::DEFAULT_PIPELINE.replace("127.0.0.1:8080", "127.0.0.1:0");
    std::fs::write(dir.path().join("pipeline.toml"), pipeline).unwrap();
    let log = dir.path().join("node.log");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_VAR, dir.path())
        .env("RUST_LOG", "warn,medianode::admin=info,medianode::server=info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let admin = logged(&log, "admin API on http://");
    let server = logged(&log, "serving the web client on http://");
    let pid = child.id();
    let launched = sample(pid, admin).await;

    round(server, admin, 0).await;
    let empty = || async { http(admin, "GET", "/rooms").await.trim() == "[]" };
    while !empty().await {
        tokio::time::sleep(Duration::from_millis(50)).await; // the node tears the last room down
    }
    let start = sample(pid, admin).await;
    let mut peak = start;
    let began = Instant::now();
    let mut rounds = 1u64;
    // Resident memory every tenth of the run: a leak climbs steadily, an
    // allocator settling in flattens out.
    let mut curve = vec![start.rss];
    while began.elapsed() < length {
        round(server, admin, rounds).await;
        rounds += 1;
        let now = sample(pid, admin).await;
        peak = peak.max(now);
        if began.elapsed() >= length / 10 * curve.len() as u32 {
            curve.push(now.rss);
        }
    }
    let settle = Instant::now();
    while !empty().await && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Peer connections close asynchronously: give the node's tasks a moment.
    let mut end = sample(pid, admin).await;
    while end.tasks > start.tasks && settle.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        end = sample(pid, admin).await;
    }
    peak = peak.max(end);
    let _ = child.kill();
    let _ = child.wait();

    let mib = |b: u64| b as f64 / 1_048_576.0;
    let ratio = |end: u64, start: u64| end as f64 / start.max(1) as f64;
    println!(
        "churn: {rounds} rounds of {ROOMS} rooms x 3 peers in {:.0} s ({} joins)",
        began.elapsed().as_secs_f64(),
        rounds * ROOMS as u64 * 3
    );
    println!("                 launched    start     peak      end   end/start");
    println!(
        "  RSS (MiB)   {:>10.1} {:>8.1} {:>8.1} {:>8.1}   {:>6.3}",
        mib(launched.rss),
        mib(start.rss),
        mib(peak.rss),
        mib(end.rss),
        ratio(end.rss, start.rss)
    );
    let curve: Vec<String> = curve.iter().map(|&b| format!("{:.1}", mib(b))).collect();
    println!("  RSS every tenth of the run (MiB): {}", curve.join(" "));
    println!("  open fds    {:>10} {:>8} {:>8} {:>8}   {:>6.3}", launched.fds, start.fds, peak.fds, end.fds, ratio(end.fds, start.fds));
    println!(
        "  tokio tasks {:>10} {:>8} {:>8} {:>8}   {:>6.3}",
        launched.tasks,
        start.tasks,
        peak.tasks,
        end.tasks,
        ratio(end.tasks, start.tasks)
    );
    use results::Better::Lower;
    results::write(
        "churn",
        &[
            ("rss_end_over_start", ratio(end.rss, start.rss), 1.05, Lower),
            ("fds_end_over_start", ratio(end.fds, start.fds), 1.05, Lower),
            ("tasks_end_over_start", ratio(end.tasks, start.tasks), 1.05, Lower),
            ("rss_peak_mib", mib(peak.rss), 500.0, Lower),
        ],
    );
}
