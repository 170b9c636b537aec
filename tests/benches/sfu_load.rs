//! The SFU under load. The node runs in a process of its own (this binary
//! run again as the node: the same `medianode::daemon::run` as `medianode
//! run`, on a pipeline like `pipelines/sfu.toml`); real WebRTC participants
//! (webrtc-rs, one UDP socket each, joined through the node's WebSocket)
//! run in this one, all on loopback. Publishers send 1000-byte RTP packets
//! stamped with the time they were sent, a burst every 10 ms (2 ms for
//! `1x1`).
//!
//! For each shape it reports, over a 5 s window:
//! - forwarded packets per second, and per CPU-second of the node's process
//!   (utime + stime from /proc: everything the node does, kernel included);
//! - delivery: packets received by every participant over those sent to it;
//! - latency, send to receive, p50 and p99, next to a direct peer-to-peer
//!   pair at the same pace in this process (the difference is the node's);
//! - the node's resident memory per participant (after the participants
//!   joined, over before).
//!
//! Shapes: `1x1` at 500 packets/s one at a time (the latency the node adds
//! without load), `1x4` and `4x4` (publishers x subscribers in one room; a
//! publisher also receives the others), `1x200` (one room), `50x1x4` (50
//! rooms of 1x4); `4x4-native` is 4x4 without the forwarding plugin (the
//! decision compiled in), for the plugin/native ratio.
//!
//! Run: `cargo bench -p medianode-tests --bench sfu_load` (about 3 minutes).
//! `MEDIANODE_LOAD_SHAPES=4x4,1x200` runs some shapes only. Figures go to
//! `target/bench-results/sfu-load.json`.
//!
//! The relay between nodes (a cluster's): `1x1-relay` and `4x4-relay` run
//! two nodes (each a process, in a cluster on a `redis-server` started
//! here), publishers on the first, subscribers on the second: every packet
//! crosses the pipe between them. Their latency next to `1x1`'s is what
//! the relay adds; their packets per CPU-second count both nodes' copies
//! over both nodes' CPU.

// Bench code: a failed unwrap is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../all/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../all/redis_server.rs"]
mod redis_server;
#[path = "../../node/benches/common/mod.rs"]
mod results;
#[path = "../all/webrtc_peers.rs"]
#[allow(dead_code)]
mod webrtc_peers;

use redis_server::Redis;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use webrtc_peers::{Peer, direct_pair, peer_at};

/// Set in the node's process: the directory with its `pipeline.toml`.
const NODE_VAR: &str = "MEDIANODE_LOAD_NODE";
/// The node's admin listener (for `/metrics`), in the node's process.
const ADMIN_VAR: &str = "MEDIANODE_LOAD_ADMIN";

/// How long publishers send, per shape.
const WINDOW: Duration = Duration::from_secs(5);
/// Bytes of RTP payload per packet.
const PACKET: usize = 1000;

/// A load: `rooms` rooms, each with `publishers` and `subscribers`.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    rooms: usize,
    publishers: usize,
    subscribers: usize,
    /// Packets per second per publisher, sent in a burst every `tick`.
    rate: u32,
    tick: Duration,
    /// The forwarding decision: the stock plugin, or compiled in.
    plugin: bool,
    /// Two nodes in a cluster: publishers on one, subscribers on the other.
    relay: bool,
}

impl Shape {
    fn participants(&self) -> usize {
        self.rooms * (self.publishers + self.subscribers)
    }
}

const TICK: Duration = Duration::from_millis(10);

const SHAPES: [Shape; 8] = [
    // The latency the node adds, unloaded: one packet every 2 ms.
    Shape { name: "1x1", rooms: 1, publishers: 1, subscribers: 1, rate: 500, tick: Duration::from_millis(2), plugin: true, relay: false },
    Shape { name: "1x4", rooms: 1, publishers: 1, subscribers: 4, rate: 2000, tick: TICK, plugin: true, relay: false },
    Shape { name: "4x4", rooms: 1, publishers: 4, subscribers: 4, rate: 2000, tick: TICK, plugin: true, relay: false },
    Shape { name: "4x4-native", rooms: 1, publishers: 4, subscribers: 4, rate: 2000, tick: TICK, plugin: false, relay: false },
    Shape { name: "1x200", rooms: 1, publishers: 1, subscribers: 200, rate: 250, tick: TICK, plugin: true, relay: false },
    Shape { name: "50x1x4", rooms: 50, publishers: 1, subscribers: 4, rate: 250, tick: TICK, plugin: true, relay: false },
    Shape {
        name: "1x1-relay",
        rooms: 1,
        publishers: 1,
        subscribers: 1,
        rate: 500,
        tick: Duration::from_millis(2),
        plugin: true,
        relay: true,
    },
    Shape { name: "4x4-relay", rooms: 1, publishers: 4, subscribers: 4, rate: 2000, tick: TICK, plugin: true, relay: true },
];

/// What one shape measured.
struct Figures {
    forwarded_per_second: f64,
    per_cpu_second: f64,
    cores: f64,
    delivery: f64,
    p50_us: f64,
    p99_us: f64,
    rss_per_participant_kib: f64,
}

fn main() -> ExitCode {
    if let Some(dir) = std::env::var_os(NODE_VAR) {
        return node_process(Path::new(&dir));
    }
    let wanted: Option<Vec<String>> =
        std::env::var("MEDIANODE_LOAD_SHAPES").ok().map(|s| s.split(',').map(|s| s.trim().to_string()).collect());
    let shapes: Vec<Shape> = SHAPES.iter().copied().filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == s.name))).collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("peers").enable_all().build().expect("runtime");
    rt.block_on(async {
        // The same pace without a node, for each pace the shapes use.
        let mut direct = Vec::new();
        for shape in &shapes {
            if !direct.iter().any(|(rate, tick, _)| (*rate, *tick) == (shape.rate, shape.tick)) {
                let d = direct_latency(shape.rate, shape.tick).await;
                println!("direct peer-to-peer at {} packets/s every {:?}: p50 {:.0} us, p99 {:.0} us", shape.rate, shape.tick, d.0, d.1);
                direct.push((shape.rate, shape.tick, d));
            }
        }
        let mut figures = Vec::new();
        for shape in shapes {
            let (direct50, direct99) = direct.iter().find(|(r, t, _)| (*r, *t) == (shape.rate, shape.tick)).map_or((0.0, 0.0), |(_, _, d)| *d);
            let f = run(shape).await;
            println!(
                "{:>10}: {:>7.0} forwarded/s, {:>7.0} per node CPU-second ({:.2} cores), delivery {:.2}%, latency p50 {:.0} us p99 {:.0} us (node adds {:.0} / {:.0}), RSS {:.0} KiB per participant",
                shape.name,
                f.forwarded_per_second,
                f.per_cpu_second,
                f.cores,
                100.0 * f.delivery,
                f.p50_us,
                f.p99_us,
                f.p50_us - direct50,
                f.p99_us - direct99,
                f.rss_per_participant_kib,
            );
            figures.push((shape, f, direct50, direct99));
        }
        write_results(&figures);
    });
    ExitCode::SUCCESS
}

/// Writes `sfu-load.json`: each shape's figures, and the goals:
/// 4x4 per CPU-second, delivery and plugin/native; the latency the node
/// adds, unloaded (1x1).
fn write_results(figures: &[(Shape, Figures, f64, f64)]) {
    use results::Better::{Higher, Lower};
    let mut out: Vec<(String, f64, f64, results::Better)> = Vec::new();
    let find = |name: &str| figures.iter().find(|(s, ..)| s.name == name);
    for (shape, f, _, _) in figures {
        let n = shape.name;
        out.push((format!("{n}_forwarded_per_cpu_second"), f.per_cpu_second, 150_000.0, Higher));
        out.push((format!("{n}_forwarded_per_second"), f.forwarded_per_second, 0.0, Higher));
        out.push((format!("{n}_node_cores"), f.cores, 1.0, Lower));
        out.push((format!("{n}_delivery"), f.delivery, 0.995, Higher));
        out.push((format!("{n}_latency_p50_us"), f.p50_us, 1000.0, Lower));
        out.push((format!("{n}_latency_p99_us"), f.p99_us, 5000.0, Lower));
        out.push((format!("{n}_rss_per_participant_kib"), f.rss_per_participant_kib, 512.0, Lower));
    }
    if let Some((_, f, direct50, direct99)) = find("1x1") {
        // What the node adds is at most the whole path's latency (both
        // peers' stacks included): the goal is judged on that bound, as
        // the difference from the direct pair is within the peers' noise.
        out.push(("added_latency_p50_us_at_most".into(), f.p50_us, 100.0, Lower));
        out.push(("added_latency_p99_us_at_most".into(), f.p99_us, 1000.0, Lower));
        out.push(("1x1_minus_direct_p50_us".into(), f.p50_us - direct50, 100.0, Lower));
        out.push(("1x1_minus_direct_p99_us".into(), f.p99_us - direct99, 1000.0, Lower));
    }
    if let (Some((_, one, ..)), Some((_, two, ..))) = (find("1x1"), find("1x1-relay")) {
        out.push(("relay_added_latency_p50_us".into(), two.p50_us - one.p50_us, 200.0, Lower));
        out.push(("relay_added_latency_p99_us".into(), two.p99_us - one.p99_us, 1000.0, Lower));
    }
    if let (Some((_, one, ..)), Some((_, two, ..))) = (find("4x4"), find("4x4-relay")) {
        out.push(("4x4_relay_vs_one_node_per_cpu_second".into(), two.per_cpu_second / one.per_cpu_second, 0.8, Higher));
    }
    if let (Some((_, plugin, ..)), Some((_, native, ..))) = (find("4x4"), find("4x4-native")) {
        out.push(("4x4_plugin_vs_native_per_cpu_second".into(), plugin.per_cpu_second / native.per_cpu_second, 0.9, Higher));
    }
    let borrowed: Vec<(&str, f64, f64, results::Better)> = out.iter().map(|(n, v, g, b)| (n.as_str(), *v, *g, *b)).collect();
    results::write("sfu-load", &borrowed);
}

/// The node's process: the pipeline in `dir`, until SIGTERM.
fn node_process(dir: &Path) -> ExitCode {
    medianode::telemetry::init(medianode::telemetry::LogFormat::Text);
    let admin = std::env::var(ADMIN_VAR).ok().and_then(|a| a.parse().ok());
    medianode::daemon::run(
        Some(&dir.join("pipeline.toml")),
        &medianode::daemon::RunOptions { crash_dir: dir.join("crash"), cache_dir: None, admin: Some(admin), watch: false },
    )
}

/// The node in a child process, and where it listens.
struct NodeProcess {
    child: Child,
    signaling: SocketAddr,
    admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl NodeProcess {
    /// A node; in the cluster on `redis` as `cluster.1` when given.
    async fn start(plugin: bool, cluster: Option<(&str, &str)>) -> NodeProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let (signaling, admin) = (free_port(), free_port());
        let forward = if plugin {
            "[[stage]]\nid = \"forward\"\nplugin = \"stock:forward\"\nlimits = { deadline = \"5ms\" }\nfailure = \"fail-open\"\n"
        } else {
            ""
        };
        // `MEDIANODE_LOAD_THREADS`: the node's media threads (default: one per core).
        let threads: u32 = std::env::var("MEDIANODE_LOAD_THREADS").ok().and_then(|t| t.parse().ok()).unwrap_or(0);
        let cluster = cluster.map_or(String::new(), |(redis, node)| format!("[cluster]\nredis = \"{redis}\"\nnode = \"{node}\"\n\n"));
        let pipeline = format!(
            "[pipeline]\nname = \"load\"\n\n{cluster}[server]\nlisten = \"{signaling}\"\nmedia-ip = \"127.0.0.1\"\nmedia-threads = {threads}\nrate = 1000\nburst = 1000\n\n\
             [[stage]]\nid = \"rooms\"\nplugin = \"stock:signaling\"\nconfig = {{ max-room-size = 500 }}\nlimits = {{ deadline = \"50ms\" }}\n\n{forward}"
        );
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).expect("pipeline");
        let child = Command::new(std::env::current_exe().expect("this binary"))
            .env(NODE_VAR, dir.path())
            .env(ADMIN_VAR, admin.to_string())
            .env("RUST_LOG", "warn,rtc_ice=error,rtc_dtls=error")
            .stdin(Stdio::null())
            .spawn()
            .expect("node process");
        // Ready when its WebSocket listener accepts.
        let started = Instant::now();
        while TcpStream::connect(signaling).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "the node did not start listening on {signaling}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        NodeProcess { child, signaling, admin, _dir: dir }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `medianode_sfu_packets_out_total` from the node's `/metrics`.
    fn packets_out(&self) -> u64 {
        let mut stream = TcpStream::connect(self.admin).expect("admin listener");
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: node\r\n\r\n");
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body.lines()
            .find_map(|l| l.strip_prefix("medianode_sfu_packets_out_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64
    }

    fn stop(mut self) {
        // SIGTERM: the node drains and exits.
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    /// A run that panicked leaves no node behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port nobody listens on at the moment.
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// utime + stime of process `pid`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks =
        fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// CPU time of each of process `pid`'s threads, by thread name.
fn thread_times(pid: u32) -> std::collections::BTreeMap<String, Duration> {
    let mut times = std::collections::BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map_or("", |(name, _)| name);
        // Numbered threads of one kind count together.
        let kind = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_string();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        *times.entry(kind).or_default() += Duration::from_secs_f64(ticks as f64 / 100.0);
    }
    times
}

/// Resident memory of process `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

struct Room {
    publishers: Vec<Peer>,
    subscribers: Vec<Peer>,
}

async fn run(shape: Shape) -> Figures {
    let redis = shape.relay.then(Redis::start);
    let nodes = match &redis {
        None => vec![NodeProcess::start(shape.plugin, None).await],
        Some(redis) => {
            vec![
                NodeProcess::start(shape.plugin, Some((&redis.url, "a"))).await,
                NodeProcess::start(shape.plugin, Some((&redis.url, "b"))).await,
            ]
        }
    };
    // Publishers on the first node, subscribers on the last (the same one
    // but for a relay).
    let (first, last) = (nodes[0].signaling, nodes[nodes.len() - 1].signaling);
    let total = |f: &dyn Fn(&NodeProcess) -> u64| nodes.iter().map(f).sum::<u64>();
    let cpu = || nodes.iter().map(|n| cpu_time(n.pid())).sum::<Duration>();
    let rss_before = total(&|n| rss_kib(n.pid()));
    let mut rooms = Vec::new();
    for r in 0..shape.rooms {
        let name = format!("load-{r}");
        let mut room = Room { publishers: Vec::new(), subscribers: Vec::new() };
        for i in 0..shape.publishers {
            room.publishers.push(peer_at(first, &name, &format!("p{i}"), true).await);
        }
        for i in 0..shape.subscribers {
            room.subscribers.push(peer_at(last, &name, &format!("s{i}"), false).await);
        }
        rooms.push(room);
    }
    for room in &rooms {
        for p in room.publishers.iter().chain(&room.subscribers) {
            p.connected().await;
        }
    }
    warm_up(&rooms).await;
    for p in rooms.iter().flat_map(|r| r.publishers.iter().chain(&r.subscribers)) {
        p.seen.light.store(true, Ordering::Relaxed);
        p.seen.latencies.lock().expect("lock").clear();
    }
    // Late warm-up packets land before the counts start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = total(&|n| rss_kib(n.pid()));
    let received =
        |rooms: &[Room]| -> u64 { rooms.iter().flat_map(|r| r.publishers.iter().chain(&r.subscribers)).map(Peer::received).sum() };
    let (out0, cpu0, t0, received0) = (total(&NodeProcess::packets_out), cpu(), Instant::now(), received(&rooms));
    let threads0 = thread_times(nodes[0].pid());
    let generator0 = cpu_time(std::process::id());

    // Every publisher sends, paced, for the window.
    let mut sending = Vec::new();
    for (r, room) in rooms.iter_mut().enumerate() {
        for (i, p) in room.publishers.drain(..).enumerate() {
            sending.push(tokio::spawn(async move {
                let sent = send_paced(&p, shape.rate, shape.tick, WINDOW).await;
                (r, i, p, sent)
            }));
        }
    }
    let mut sent_per_room = vec![Vec::new(); rooms.len()];
    let mut returned: Vec<(usize, usize, Peer)> = Vec::new();
    for task in sending {
        let (r, i, p, sent) = task.await.expect("publisher");
        sent_per_room[r].push(sent);
        returned.push((r, i, p));
    }
    returned.sort_by_key(|(r, i, _)| (*r, *i));
    for (r, _, p) in returned {
        rooms[r].publishers.push(p);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (out1, cpu1, t1, received1) = (total(&NodeProcess::packets_out), cpu(), Instant::now(), received(&rooms));
    // Where the node's CPU went, by thread kind (busiest first).
    let mut threads: Vec<(String, f64)> = thread_times(nodes[0].pid())
        .into_iter()
        .map(|(kind, t)| (kind.clone(), (t.saturating_sub(threads0.get(&kind).copied().unwrap_or_default())).as_secs_f64()))
        .filter(|(_, t)| *t > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let threads: Vec<String> = threads.iter().take(5).map(|(kind, t)| format!("{kind} {t:.2}s")).collect();
    let generator = (cpu_time(std::process::id()) - generator0).as_secs_f64() / (t1 - t0).as_secs_f64();
    println!("{:>10}  node CPU by thread: {}; the load generator's peers: {generator:.2} cores", shape.name, threads.join(", "));

    // Sent to each participant: everything its room's other publishers sent.
    let expected: u64 = sent_per_room
        .iter()
        .map(|sent| {
            let total: u64 = sent.iter().sum();
            // Subscribers get every publisher's; a publisher all but its own.
            total * shape.subscribers as u64 + sent.iter().map(|own| total - own).sum::<u64>()
        })
        .sum();
    let mut latencies: Vec<u64> = Vec::new();
    for p in rooms.iter().flat_map(|r| r.publishers.iter().chain(&r.subscribers)) {
        latencies.extend(p.seen.latencies.lock().expect("lock").iter());
    }
    latencies.sort_unstable();
    let forwarded = (out1 - out0) as f64;
    let (wall, cpu) = ((t1 - t0).as_secs_f64(), (cpu1 - cpu0).as_secs_f64());
    for p in rooms.iter().flat_map(|r| r.publishers.iter().chain(&r.subscribers)) {
        let _ = p.pc.close().await;
    }
    for node in nodes {
        node.stop();
    }
    drop(redis);
    Figures {
        forwarded_per_second: forwarded / wall,
        per_cpu_second: forwarded / cpu.max(0.01),
        cores: cpu / wall,
        delivery: (received1 - received0) as f64 / expected.max(1) as f64,
        p50_us: percentile(&latencies, 0.5),
        p99_us: percentile(&latencies, 0.99),
        rss_per_participant_kib: rss_after.saturating_sub(rss_before) as f64 / shape.participants() as f64,
    }
}

/// Sends until every participant receives every other publisher of its room.
async fn warm_up(rooms: &[Room]) {
    // The node gives each copy an SSRC of its own: count distinct ones.
    let ready = |rooms: &[Room]| {
        rooms.iter().all(|room| {
            room.publishers.iter().chain(&room.subscribers).enumerate().all(|(i, p)| {
                let others = room.publishers.len() - usize::from(i < room.publishers.len());
                let seen: HashSet<u32> = p.seen.unique.lock().expect("lock").iter().map(|(ssrc, _)| *ssrc).collect();
                seen.len() >= others
            })
        })
    };
    for round in 0..1000u16 {
        for p in rooms.iter().flat_map(|r| &r.publishers) {
            p.send_audio(round, 1, Duration::ZERO).await;
        }
        if ready(rooms) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counts: Vec<Vec<u64>> = rooms.iter().map(|r| r.publishers.iter().chain(&r.subscribers).map(Peer::received).collect()).collect();
    panic!("media did not reach every participant within 20 s; packets received: {counts:?}");
}

/// Sends timed packets at `rate` per second for `window`, in a burst every
/// `every`; returns how many.
async fn send_paced(p: &Peer, rate: u32, every: Duration, window: Duration) -> u64 {
    let per_tick = ((f64::from(rate) * every.as_secs_f64()).round() as u32).max(1);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let until = Instant::now() + window;
    let (mut sequence, mut sent) = (1000u16, 0u64);
    while Instant::now() < until {
        tick.tick().await;
        for _ in 0..per_tick {
            p.send_timed(sequence, PACKET).await;
            sequence = sequence.wrapping_add(1);
            sent += 1;
        }
    }
    sent
}

/// Latency p50/p99 of a direct pair at `rate`, in bursts every `every`,
/// microseconds.
async fn direct_latency(rate: u32, every: Duration) -> (f64, f64) {
    let (a, b) = direct_pair().await;
    a.connected().await;
    b.connected().await;
    for round in 0..200u16 {
        a.send_audio(round, 1, Duration::from_millis(10)).await;
        if b.received() > 0 {
            break;
        }
    }
    b.seen.latencies.lock().expect("lock").clear();
    send_paced(&a, rate, every, Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut l = b.seen.latencies.lock().expect("lock").clone();
    l.sort_unstable();
    let _ = a.pc.close().await;
    let _ = b.pc.close().await;
    (percentile(&l, 0.5), percentile(&l, 0.99))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0) as f64 / 1000.0
}
