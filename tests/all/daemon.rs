//! The node as a daemon under attack: a node in a process of its own (this
//! test binary, run again as `daemon::child`, which calls the same
//! `medianode::daemon::run` as `medianode run`) with a hostile stage beside
//! a healthy chain. For each attack, measured from outside: the node's
//! resident memory grows by less than 64 MiB; SIGTERM stops it within 1 s;
//! what it wrote to its log and crash directory stays within their budgets;
//! the attack shows in the log; and the healthy chain's WAV file holds
//! every block, none of them silent but for the machine's own hiccups (see
//! [`the_attack_never_reached_the_chain`]).

use crate::webrtc_peers::{Peer, peer_at_with};
use medianode::daemon::RunOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const DIR_VAR: &str = "MEDIANODE_DAEMON_DIR";
/// Set: the child runs with `--watch`.
const WATCH_VAR: &str = "MEDIANODE_DAEMON_WATCH";

/// How long each attack runs before the SIGTERM.
const ATTACK: Duration = Duration::from_secs(3);

/// The child: a node on `$MEDIANODE_DAEMON_DIR/pipeline.toml`.
#[test]
#[ignore = "a child of the daemon tests: runs the node in $MEDIANODE_DAEMON_DIR"]
fn child() -> ExitCode {
    let Some(dir) = std::env::var_os(DIR_VAR).map(PathBuf::from) else { return ExitCode::SUCCESS };
    medianode::telemetry::init(medianode::telemetry::LogFormat::Text);
    medianode::daemon::run(
        Some(&dir.join("pipeline.toml")),
        &RunOptions {
            crash_dir: dir.join("crash"),
            cache_dir: None,
            // A port of its own: children run side by side.
            admin: Some(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))),
            watch: std::env::var_os(WATCH_VAR).is_some(),
        },
    )
}

/// A node running `attack` (the hostile stage's config) in a child process.
pub(crate) struct Node {
    pub(crate) child: Child,
    dir: tempfile::TempDir,
    /// Held while it runs, unless a test that loads every core started it.
    _measuring: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

impl Node {
    /// A pipeline with a hostile stage beside a healthy chain writing
    /// `beside.wav`; `hostile`: the hostile stage's `config`, `limits` and
    /// `restart` lines; `budget`: the pipeline's.
    fn start(hostile: &str, budget: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let beside = dir.path().join("beside.wav");
        let pipeline = format!(
            r#"
            [pipeline]
            pace = "realtime"
            tick = "10ms"
            {budget}

            [[source]]
            id = "tone"
            kind = "tone"

            [[stage]]
            id = "hostile"
            plugin = "stock:hostile"
            inputs = ["tone"]
            {hostile}

            [[stage]]
            id = "beside"
            plugin = "stock:gain"
            inputs = ["tone"]

            [[sink]]
            id = "out"
            kind = "null"
            inputs = ["hostile"]

            [[sink]]
            id = "beside-out"
            kind = "wav"
            path = "{}"
            inputs = ["beside"]
            "#,
            beside.display()
        );
        Node::spawn(dir, &pipeline)
    }

    /// A node running `pipeline`, keeping its files in `dir`.
    fn spawn(dir: tempfile::TempDir, pipeline: &str) -> Node {
        Node::spawn_with(dir, pipeline, &[])
    }

    /// The same, with more environment variables.
    fn spawn_with(dir: tempfile::TempDir, pipeline: &str, env: &[(&str, &str)]) -> Node {
        let measuring = crate::common::measuring_real_time();
        Node::launch(dir, pipeline, env, Some(measuring))
    }

    /// A node for a test that holds every core already (its real time is
    /// not measured).
    pub(crate) fn spawn_under_load(dir: tempfile::TempDir, pipeline: &str) -> Node {
        Node::launch(dir, pipeline, &[], None)
    }

    fn launch(
        dir: tempfile::TempDir,
        pipeline: &str,
        env: &[(&str, &str)],
        measuring: Option<std::sync::RwLockReadGuard<'static, ()>>,
    ) -> Node {
        std::fs::write(dir.path().join("pipeline.toml"), pipeline).expect("write pipeline");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        // A node whose real time is measured runs at the priority
        // examples/systemd/medianode.service gives it (`Nice=-10`), so that
        // the rest of the suite, on the same two cores, delays it less than
        // an attack from inside would (`nice` runs it as it is where it may
        // not raise a priority).
        let exe = std::env::current_exe().expect("test binary");
        let mut command = match measuring {
            Some(_) => {
                let mut nice = Command::new("nice");
                nice.args(["-n", "-10"]).arg(exe);
                nice
            }
            None => Command::new(exe),
        };
        let child = command
            .args(["daemon::child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("child node");
        Node { child, dir, _measuring: measuring }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.path("stderr.log")).unwrap_or_default()
    }

    /// Waits (up to a minute) until the log says `text`.
    pub(crate) fn wait_for(&mut self, text: &str) {
        let until = Instant::now() + Duration::from_secs(60);
        while !self.log().contains(text) {
            assert!(Instant::now() < until, "the node never logged {text:?}:\n{}", self.log());
            assert!(self.alive(), "the node exited before logging {text:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20)); // polling a file another process writes
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    }

    /// Sends SIGTERM; returns how long the node took to exit, and whether
    /// it exited cleanly.
    fn terminate(&mut self) -> (Duration, bool) {
        let sent = Instant::now();
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
        // SAFETY: kill(2) with a pid of our own child and a valid signal
        // touches no memory of ours.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM sent");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (sent.elapsed(), status.success());
            }
            if sent.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                return (sent.elapsed(), false);
            }
            std::thread::sleep(Duration::from_millis(5)); // polling a child's exit
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
}

/// What a run under attack measured.
struct Measured {
    seconds: f64,
    /// Blocks the chain beside wrote.
    blocks: usize,
    /// Its silent blocks, as runs of consecutive ones: (first block, length).
    stalls: Vec<(usize, usize)>,
    /// The chain beside's `late` count, from the node's final stats.
    late: u64,
}

impl Measured {
    fn silent(&self) -> usize {
        self.stalls.iter().map(|&(_, length)| length).sum()
    }
}

/// Runs `attack` for [`ATTACK`] and checks everything the module docs say;
/// `shows` is what the log must say about it.
fn attack(attack: &str, limits: &str, shows: &str) {
    let hostile = format!("config = {{ {attack} }}\nlimits = {{ {limits} }}");
    let m = run_attack(attack, &hostile, "", ATTACK, shows);
    assert!(m.blocks as f64 >= m.seconds * 100.0 * 0.9, "{attack}: the chain beside made {} blocks in {:.1} s", m.blocks, m.seconds);
    the_attack_never_reached_the_chain(attack, every(attack), &m);
}

/// The attack never reached the chain beside: the chain was silent (late)
/// for at most 1 block in 20, and its stalls (runs of silent blocks) do not
/// follow the attack: at most a third of the attacks (and 2 are forgiven)
/// have a stall starting on the attacked block or the next.
///
/// The machine, which runs the rest of the suite on the same two cores
/// (and, as a VM, shares its host), deschedules the node past a 10 ms tick
/// now and then, at random: seen, up to 4 single-block stalls in 305 blocks
/// in a suite run that took a quarter longer than the others, and once 7
/// silent blocks in a row. An attack that reached the chain would stall it
/// where it attacks, every time: on every block (far past 1 in 20), or on
/// every `every`th one (every attack on its block).
fn the_attack_never_reached_the_chain(name: &str, every: usize, m: &Measured) {
    let every = every.max(1);
    let late = usize::try_from(m.late).unwrap_or(usize::MAX);
    // Attacked blocks have `sequence % every == every - 1`.
    let on_attacks = m.stalls.iter().filter(|&&(first, _)| (first + 1) % every <= 1).count();
    let attacks = m.blocks / every;
    eprintln!(
        "{name}: the chain beside: {} blocks, {late} late, stalls (first block, blocks): {:?}, {on_attacks} on the {attacks} attacks",
        m.blocks, m.stalls
    );
    assert!(
        late <= m.blocks / 20 && m.silent() <= m.blocks / 20 && on_attacks <= (attacks / 3).max(2),
        "{name}: the chain beside missed {late} ({} silent) of {} blocks, in stalls (first block, blocks) {:?}, {on_attacks} of them on the {attacks} attacks",
        m.silent(),
        m.blocks,
        m.stalls
    );
}

/// The `every = N` of an attack's config (1 when it attacks every block).
fn every(config: &str) -> usize {
    config
        .split_once("every = ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Runs of consecutive silent blocks: (first block, length).
fn stalls(samples: &[f32]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, block) in samples.chunks(480).enumerate() {
        if !block.iter().all(|&s| s == 0.0) {
            continue;
        }
        match runs.last_mut() {
            Some((first, length)) if *first + *length == i => *length += 1,
            _ => runs.push((i, 1)),
        }
    }
    runs
}

#[test]
fn silent_blocks_are_counted_as_stalls() {
    let block = |silent: bool| vec![if silent { 0.0 } else { 0.5 }; 480];
    let samples: Vec<f32> = [false, true, true, false, true, false, false, true].iter().flat_map(|&s| block(s)).collect();
    assert_eq!(stalls(&samples), [(1, 2), (4, 1), (7, 1)]);
    assert_eq!(every(r#"attack = "nan", every = 10"#), 10);
    assert_eq!(every(r#"attack = "println""#), 1);
}

fn run_attack(name: &str, hostile: &str, budget: &str, attack: Duration, shows: &str) -> Measured {
    let mut node = Node::start(hostile, budget);
    node.wait_for("pipeline running");
    let started = Instant::now();
    let baseline = node.rss();
    let mut peak = baseline;
    while started.elapsed() < attack {
        assert!(node.alive(), "{name}: the node died:\n{}", node.log());
        peak = peak.max(node.rss());
        std::thread::sleep(Duration::from_millis(50)); // sampling memory
    }
    let seconds = started.elapsed().as_secs_f64();
    let (took, clean) = node.terminate();
    let log = node.log();
    eprintln!(
        "{name}: RSS {} -> peak {} MiB, SIGTERM to exit {:.0} ms, log {} KiB, crash dir {} KiB",
        baseline >> 20,
        peak >> 20,
        took.as_secs_f64() * 1e3,
        log.len() >> 10,
        dir_size(&node.path("crash")) >> 10
    );
    assert!(peak - baseline < 64 << 20, "{name}: RSS grew by {} MiB", (peak - baseline) >> 20);
    assert!(took < Duration::from_secs(1), "{name}: SIGTERM took {took:?}");
    assert!(clean, "{name}: the node did not exit cleanly:\n{log}");
    assert!(log.contains(shows), "{name}: the log does not show {shows:?}");
    // Plugin text never starts a line of its own.
    assert!(!log.lines().any(|l| l.starts_with("2026-12-01T00:00:00")), "{name}: a forged line in the log");
    // The plugin's share of the log is 16 KiB/s with a 4 s burst, plus each
    // line's prefix; the host's own lines (faults, restarts) come on top.
    let budget = 16.0 * 1024.0 * (4.0 + seconds + 1.0) * 2.0 + 256.0 * 1024.0;
    assert!((log.len() as f64) < budget, "{name}: {} bytes of log", log.len());
    assert!(dir_size(&node.path("crash")) <= 16 << 20, "{name}: the crash directory outgrew its budget");
    // The chain beside: the blocks it made, and the silent ones.
    let mut wav = hound::WavReader::open(node.path("beside.wav")).expect("beside.wav");
    let samples: Vec<f32> = wav.samples::<f32>().map(|s| s.expect("sample")).collect();
    let late = final_stats(&log).and_then(|stats| stats["stages"]["beside"]["late"].as_u64()).unwrap_or(u64::MAX);
    Measured { seconds, blocks: samples.len() / 480, stalls: stalls(&samples), late }
}

/// The stats the node logs when its pipeline stops.
fn final_stats(log: &str) -> Option<serde_json::Value> {
    let line = log.lines().find(|l| l.contains("pipeline stopped"))?;
    let json = &line[line.find("stats=")? + "stats=".len()..];
    serde_json::Deserializer::from_str(json).into_iter().next()?.ok()
}

/// Ten seconds of realtime at the default budget (the tick), with a stage
/// beside that fails in a way that costs time on every tick: the chain
/// beside must make a block every tick, and show no sign of the attack
/// ([`the_attack_never_reached_the_chain`]). Were the attack to reach it,
/// nearly every block would be late.
fn stays_realtime(name: &str, hostile: &str, shows: &str) {
    let m = run_attack(name, hostile, "", Duration::from_secs(10), shows);
    let per_second = m.blocks as f64 / m.seconds;
    eprintln!(
        "{name}: the chain beside made {} blocks in {:.2} s ({per_second:.1}/s), {} late, {} silent",
        m.blocks,
        m.seconds,
        m.late,
        m.silent()
    );
    assert!(per_second >= 98.0, "{name}: {per_second:.1} blocks a second beside");
    the_attack_never_reached_the_chain(name, every(hostile), &m);
}

#[test]
fn a_stage_whose_init_loops_after_each_crash_costs_its_neighbour_nothing_over_10_s() {
    let hostile = r#"config = { attack = "init-loop", every = 50 }
        restart = { max-restarts = 100000, long-max-restarts = 100000, backoff-cap = "200ms" }"#;
    stays_realtime("init loops after each crash", hostile, "stage fault");
}

#[test]
fn a_stage_at_twice_its_deadline_leaves_its_neighbour_realtime() {
    let hostile = r#"config = { attack = "slow", ms = 10 }
        limits = { deadline = "5ms" }
        restart = { max-restarts = 100000, long-max-restarts = 100000, healthy-after = "0ms", backoff-base = "1ms", backoff-cap = "1ms" }"#;
    stays_realtime("a stage at twice its deadline", hostile, "trap=\"deadline\"");
}

#[test]
fn println_on_every_block() {
    attack(r#"attack = "println""#, "", r#"from="stdout""#);
}

#[test]
fn a_log_flood() {
    attack(r#"attack = "log-flood", lines = 1000"#, r#"deadline = "50ms""#, "over its budget");
}

#[test]
fn a_stdout_flood() {
    attack(r#"attack = "print-flood", size = 1000000, lines = 1000"#, r#"deadline = "100ms""#, "over its budget");
}

#[test]
fn a_new_64_kib_metric_name_on_every_block() {
    attack(r#"attack = "counters", size = 65536"#, "", "pipeline running");
}

#[test]
fn state_writes_past_the_quota() {
    attack(r#"attack = "state", size = 100000"#, "", r#"text=state: Err"#);
}

#[test]
fn huge_panics() {
    attack(r#"attack = "huge-panic", size = 8000000, every = 10"#, r#"memory = "128MiB", deadline = "1s""#, "stage fault");
}

#[test]
fn init_that_loops_after_each_crash() {
    attack(r#"attack = "init-loop", every = 20"#, "", "stage fault");
}

#[test]
fn sleeping() {
    attack(r#"attack = "sleep", ms = 10000"#, "", "trap=\"deadline\"");
}

/// An SFU node in a child process: 4 publishers send VP8-sized video
/// (1200-byte packets, 150 a second: 1.4 Mbit/s each) to a room with 3
/// subscribers, one of which reads nothing for 30 s. The node's memory must
/// not grow by 64 MiB, and the two that read must get 99.5 % of the packets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_for_30_s_costs_the_others_nothing() {
    const PER_TICK: u16 = 3; // every 20 ms: 150 packets a second
    const TICKS: u16 = 1500; // 30 s
    let pipeline = r#"
        [server]
        listen = "127.0.0.1:0"
        media-ip = "127.0.0.1"

        [[stage]]
        id = "rooms"
        plugin = "stock:signaling"

        [[stage]]
        id = "forward"
        plugin = "stock:forward"
    "#;
    let mut node = Node::spawn(tempfile::tempdir().expect("tempdir"), pipeline);
    let marker = "serving the web client on http://";
    tokio::task::block_in_place(|| node.wait_for(marker));
    let log = node.log();
    let addr: std::net::SocketAddr = log[log.find(marker).expect("address") + marker.len()..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the node's address");

    let mut publishers = Vec::new();
    for i in 0..4 {
        publishers.push(peer_at_with(addr, "stall", &format!("pub{i}"), true, true).await);
    }
    let mut subscribers = Vec::new();
    for i in 0..3 {
        subscribers.push(peer_at_with(addr, "stall", &format!("sub{i}"), false, false).await);
    }
    for peer in publishers.iter().chain(&subscribers) {
        peer.connected().await;
    }
    // Until every subscriber gets video from all four publishers.
    let streams =
        |peer: &Peer| peer.seen.unique.lock().expect("lock").iter().map(|(ssrc, _)| *ssrc).collect::<std::collections::HashSet<_>>().len();
    let mut warm = 0u16;
    while subscribers.iter().any(|s| streams(s) < 4) {
        assert!(warm < 500, "video never reached every subscriber");
        for p in &publishers {
            p.send_video(warm, 1200).await;
        }
        warm += 1;
        tokio::time::sleep(Duration::from_millis(20)).await; // pacing the sender
    }

    subscribers[0].seen.stalled.store(true, Ordering::Relaxed);
    let before: Vec<usize> = subscribers.iter().map(|s| s.seen.unique.lock().expect("lock").len()).collect();
    let baseline = node.rss();
    let mut peak = baseline;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for t in 0..TICKS {
        tick.tick().await;
        for p in &publishers {
            for k in 0..PER_TICK {
                p.send_video(1000 + t * PER_TICK + k, 1200).await;
            }
        }
        if t % 25 == 0 {
            assert!(node.alive(), "the node died:\n{}", node.log());
            peak = peak.max(node.rss());
        }
    }
    // The last packets in flight.
    let sent = usize::from(TICKS * PER_TICK) * publishers.len();
    let got = |s: &Peer, before: usize| s.seen.unique.lock().expect("lock").len() - before;
    for _ in 0..100 {
        if subscribers[1..].iter().zip(&before[1..]).all(|(s, b)| got(s, *b) >= sent) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // draining
    }
    peak = peak.max(node.rss());
    let received: Vec<f64> = subscribers[1..].iter().zip(&before[1..]).map(|(s, b)| got(s, *b) as f64 / sent as f64).collect();
    eprintln!(
        "stalled subscriber: {sent} packets sent to each; the readers got {:?} of them; node RSS {} -> peak {} MiB",
        received.iter().map(|r| format!("{:.2}%", r * 100.0)).collect::<Vec<_>>(),
        baseline >> 20,
        peak >> 20
    );
    assert!(peak - baseline < 64 << 20, "the node grew by {} MiB", (peak - baseline) >> 20);
    for (i, r) in received.iter().enumerate() {
        assert!(*r >= 0.995, "subscriber {} got {:.2}% of the packets", i + 1, r * 100.0);
    }
    let (took, _) = tokio::task::block_in_place(|| node.terminate());
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
}

#[test]
fn eprintln_on_every_block() {
    attack(r#"attack = "eprintln""#, "", r#"from="stderr""#);
}

#[test]
fn reading_stdin() {
    attack(r#"attack = "stdin", every = 10"#, "", "stdin: Ok(0), 0 bytes");
}

#[test]
fn sockets_and_name_lookups() {
    attack(r#"attack = "udp", every = 10"#, "", "udp: Err");
    attack(r#"attack = "tcp", every = 10"#, "", "tcp: Err");
    attack(r#"attack = "dns", every = 10"#, "", "dns: Err");
}

#[test]
fn files_environment_and_clocks() {
    attack(r#"attack = "file", every = 10"#, "", "file: read Err");
    attack(r#"attack = "env", every = 10"#, "", "env: 0 vars, 0 args");
    attack(r#"attack = "clock", every = 10"#, "", "clock: wall Ok(0ns)");
}

#[test]
fn a_new_gauge_on_every_block() {
    attack(r#"attack = "gauges", size = 65536"#, "", "pipeline running");
}

#[test]
fn huge_log_lines() {
    attack(r#"attack = "log-huge", size = 16000000, every = 5"#, r#"memory = "128MiB", deadline = "1s""#, "cut_bytes=");
}

#[test]
fn forged_log_lines_stay_one_line() {
    attack(r#"attack = "log-forge", every = 10"#, "", r#"text=innocent\n2026-12-01"#);
}

#[test]
fn panics_through_the_default_hook() {
    attack(r#"attack = "panic-default-hook", every = 50"#, "", "hostile panic through the default hook");
}

#[test]
fn forged_report_fields() {
    attack(r#"attack = "forged-report", every = 50"#, "", r#"trap="panic""#);
}

#[test]
fn nan_and_infinity() {
    attack(r#"attack = "nan", every = 10"#, "", "pipeline running");
}

#[test]
fn process_exit() {
    attack(r#"attack = "exit", every = 50"#, "", "stage fault");
}

#[test]
fn init_that_sleeps_after_each_crash() {
    attack(r#"attack = "init-sleep", every = 20"#, "", "stage fault");
}

/// The address the child logged after `marker`.
pub(crate) fn logged_address(node: &mut Node, marker: &str) -> std::net::SocketAddr {
    node.wait_for(marker);
    let log = node.log();
    log[log.find(marker).map_or(0, |at| at + marker.len())..]
        .split(|c: char| c.is_whitespace() || c == '/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address after {marker:?} in:\n{log}"))
}

/// The system monitor with a lowered task threshold: 80 signaling
/// connections push the node's tasks over it (a warning in the log,
/// `medianode_monitor_alert{limit="tasks"} 1`, `/health` degraded); closing
/// them brings it back (logged, metric 0, `/health` ok).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_monitor_raises_and_clears_an_alert() {
    use crate::admin::get;
    const MAX_TASKS: u64 = 60;
    let pipeline = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"

        [admin]
        monitor-every = "50ms"
        max-tasks = {MAX_TASKS}

        [[stage]]
        id = "rooms"
        plugin = "stock:signaling"
        "#
    );
    let mut node = Node::spawn(tempfile::tempdir().expect("tempdir"), &pipeline);
    let (admin, server) = tokio::task::block_in_place(|| {
        (logged_address(&mut node, "admin API on http://"), logged_address(&mut node, "serving the web client on http://"))
    });
    let metric = |text: &str, name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse::<f64>().ok()).map(|v| v as u64)
    };
    let (_, text) = get(admin, "/metrics", None).await;
    let baseline = metric(&text, "medianode_tokio_tasks ").expect("the task gauge");
    assert!(baseline < MAX_TASKS, "an idle node has {baseline} tasks: raise MAX_TASKS above that");
    eprintln!("an idle node: {baseline} tasks");

    let alert = "medianode_monitor_alert{limit=\"tasks\"} ";
    let health = |body: &str| serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["status"].as_str().map(str::to_string));
    let mut sockets = Vec::new();
    for _ in 0..80 {
        sockets.push(tokio_tungstenite::connect_async(format!("ws://{server}/ws")).await.expect("connects").0);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = get(admin, "/metrics", None).await;
        let (_, body) = get(admin, "/health", None).await;
        if metric(&text, alert) == Some(1) && health(&body).as_deref() == Some("degraded") && node.log().contains("above the threshold") {
            assert!(body.contains("async tasks is"), "{body}");
            eprintln!("{}", node.log().lines().find(|l| l.contains("above the threshold")).unwrap_or_default());
            break;
        }
        assert!(Instant::now() < deadline, "no alert: {body}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await; // the monitor reads every 50 ms
    }
    drop(sockets);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = get(admin, "/metrics", None).await;
        let (_, body) = get(admin, "/health", None).await;
        if metric(&text, alert) == Some(0) && health(&body).as_deref() == Some("ok") && node.log().contains("async tasks is back to") {
            break;
        }
        assert!(Instant::now() < deadline, "the alert never cleared: {body}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An SFU node on a free port: signaling only.
const SIGNALING_NODE: &str = r#"
    [server]
    listen = "127.0.0.1:0"

    [[stage]]
    id = "rooms"
    plugin = "stock:signaling"
"#;

/// Under systemd (a `NOTIFY_SOCKET` listener here, a 100 ms watchdog):
/// `READY=1` first, `WATCHDOG=1` every 50 ms, `RELOADING=1` then `READY=1`
/// around a SIGHUP's reload, `STOPPING=1` on SIGTERM, in that order.
#[test]
fn systemd_hears_ready_watchdog_and_stopping_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let path = socket_path.to_string_lossy().to_string();
    let mut node = Node::spawn_with(dir, SIGNALING_NODE, &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "100000")]);
    let mut heard = Vec::new();
    let mut buffer = [0u8; 512];
    let mut next = |heard: &mut Vec<String>| {
        let n = socket.recv(&mut buffer).unwrap_or_else(|e| panic!("systemd heard {heard:?}, then nothing: {e}"));
        let message = String::from_utf8_lossy(&buffer[..n]).trim().to_string();
        heard.push(message.clone());
        message
    };
    assert_eq!(next(&mut heard), "READY=1");
    while heard.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        assert_eq!(next(&mut heard), "WATCHDOG=1", "only pings after READY");
    }
    let pid = libc::pid_t::try_from(node.child.id()).expect("a pid");
    // SAFETY: kill(2) with a pid of our own child and a valid signal.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0, "SIGHUP sent");
    let mut reloading = false;
    loop {
        let message = next(&mut heard);
        match message.lines().next().unwrap_or_default() {
            "WATCHDOG=1" => {}
            "RELOADING=1" if !reloading => {
                assert!(message.contains("MONOTONIC_USEC="), "systemd 253 wants the time of the reload: {message:?}");
                reloading = true;
            }
            "READY=1" if reloading => break,
            other => panic!("unexpected {other:?} after {heard:?}"),
        }
    }
    let (took, clean) = node.terminate();
    loop {
        match next(&mut heard).as_str() {
            "WATCHDOG=1" => {}
            "STOPPING=1" => break,
            other => panic!("unexpected {other:?} after {heard:?}"),
        }
    }
    assert!(clean, "exit status after SIGTERM");
    eprintln!("systemd heard {} messages; SIGTERM to exit {took:?}", heard.len());
    assert!(took < Duration::from_secs(1), "an idle node drains at once: {took:?}");
}

/// `POST /drain`: each WebSocket is closed as going away (1001) with a
/// hint to reconnect, the node exits cleanly, and its port is free for a
/// successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_sends_clients_away_and_frees_the_port() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut node = Node::spawn(tempfile::tempdir().expect("tempdir"), SIGNALING_NODE);
    let (admin, server) = tokio::task::block_in_place(|| {
        (logged_address(&mut node, "admin API on http://"), logged_address(&mut node, "serving the web client on http://"))
    });
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(tokio_tungstenite::connect_async(format!("ws://{server}/ws")).await.expect("connects").0);
    }
    let asked = Instant::now();
    assert_eq!(crate::admin::post(admin, "/drain").await.0, 202);
    for client in &mut clients {
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => break frame,
                Ok(Some(Ok(_))) => {}
                other => panic!("no close frame: {other:?}"),
            }
        };
        let frame = close.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1001, "going away");
        assert!(frame.reason.contains("reconnect"), "{}", frame.reason);
    }
    drop(clients);
    let exited = loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            break status;
        }
        assert!(asked.elapsed() < Duration::from_secs(10), "the node did not exit after draining:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(10)).await; // polling a child's exit
    };
    assert!(exited.success(), "{exited:?}:\n{}", node.log());
    eprintln!("drain to exit: {:?}", asked.elapsed());
    std::net::TcpListener::bind(server).expect("the port is free for a successor");
}

/// Hot reload with live WebRTC peers: the forwarding stage's plugin file
/// and the signaling stage's config change, and `POST /reload` swaps both
/// in while alice's audio flows to bob. No connection closes, the largest
/// gap in bob's packets is measured, the new behaviour shows (a third
/// joiner finds the room full, the forwarding stage runs the new digest),
/// and a broken file is refused with the old pipeline still serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_swaps_stages_under_live_media() {
    use crate::admin::{get, post};
    use crate::webrtc_peers::{peer_at, until_flowing};
    use medianode::runtime::stock;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let dir = tempfile::tempdir().expect("tempdir");
    let forward = stock::bytes("forward").expect("the stock forwarding plugin");
    let faulty = stock::bytes("faulty-forward").expect("another forwarding plugin");
    std::fs::write(dir.path().join("forward.wasm"), forward).expect("plugin file");
    let pipeline_path = dir.path().join("pipeline.toml");
    let pipeline = |room_size: u32, forward_config: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmedia-ip = \"127.0.0.1\"\n\n\
             [[stage]]\nid = \"rooms\"\nplugin = \"stock:signaling\"\nconfig = {{ max-room-size = {room_size} }}\n\n\
             [[stage]]\nid = \"forward\"\nplugin = \"forward.wasm\"\n{forward_config}"
        )
    };
    let mut node = Node::spawn(dir, &pipeline(50, ""));
    let (admin, server) = tokio::task::block_in_place(|| {
        (logged_address(&mut node, "admin API on http://"), logged_address(&mut node, "serving the web client on http://"))
    });
    let digest = |body: &str| serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| v["digest"].as_str().map(str::to_string));
    let hex = |bytes: &[u8]| -> String {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    };
    assert_eq!(digest(&get(admin, "/stages/forward", None).await.1), Some(hex(forward)));

    let alice = Arc::new(peer_at(server, "live", "alice", true).await);
    let bob = Arc::new(peer_at(server, "live", "bob", false).await);
    until_flowing(&alice, std::slice::from_ref(&bob)).await;
    // A third joiner fits while the room holds 50.
    let joins = |user: &'static str| async move {
        use futures_util::{SinkExt, StreamExt};
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{server}/ws")).await.expect("connects");
        let join = serde_json::json!({"type": "join", "room": "live", "user": user}).to_string();
        ws.send(tokio_tungstenite::tungstenite::Message::text(join)).await.expect("sends");
        loop {
            let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text))) = ws.next().await else { panic!("no answer to join") };
            let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            if v["type"] == "joined" || v["type"] == "error" {
                return v["code"].as_str().unwrap_or("joined").to_string();
            }
        }
    };
    assert_eq!(joins("carol").await, "joined");

    // Alice talks every 10 ms; a watcher keeps the largest gap bob sees.
    let talking = Arc::new(AtomicBool::new(true));
    let talker = {
        let (alice, talking) = (alice.clone(), talking.clone());
        tokio::spawn(async move {
            let mut sequence = 0u16;
            while talking.load(Ordering::Relaxed) {
                alice.send_audio(sequence, 1, Duration::ZERO).await;
                sequence = sequence.wrapping_add(1);
                tokio::time::sleep(Duration::from_millis(10)).await; // pacing: one packet per 10 ms
            }
        })
    };
    let largest_gap = |from: Instant, until: Instant| {
        let bob = bob.clone();
        async move {
            let mut last = (bob.received(), Instant::now());
            let mut gap = Duration::ZERO;
            while Instant::now() < until {
                let changed = bob.seen.changed.notified();
                let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
                let n = bob.received();
                let now = Instant::now();
                if n > last.0 {
                    if now >= from {
                        gap = gap.max(now - last.1);
                    }
                    last = (n, now);
                }
            }
            gap.max(Instant::now() - last.1)
        }
    };
    // The baseline: the largest gap over a second of plain forwarding.
    let start = Instant::now();
    let baseline = largest_gap(start, start + Duration::from_secs(1)).await;

    std::fs::write(&pipeline_path, pipeline(2, "config = { panic-every = 1000000 }\n")).expect("new pipeline");
    std::fs::write(pipeline_path.with_file_name("forward.wasm"), faulty).expect("new plugin");
    let watch_from = Instant::now();
    let watcher = tokio::spawn(largest_gap(watch_from, watch_from + Duration::from_secs(3)));
    let (status, body) = post(admin, "/reload").await;
    let reload_took = watch_from.elapsed();
    assert_eq!(status, 200, "{body}\n{}", node.log());
    let done: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(done["replaced"], serde_json::json!(["rooms", "forward"]), "{done}");
    let gap = watcher.await.expect("watcher");
    eprintln!("reload took {reload_took:?}; bob's largest gap: {gap:?} during the reload, {baseline:?} before it");
    assert!(gap < Duration::from_millis(50), "a {gap:?} gap in bob's audio during the reload");

    // The new behaviour: the faulty-forward digest, and a room of two.
    assert_eq!(digest(&get(admin, "/stages/forward", None).await.1), Some(hex(faulty)));
    assert_eq!(joins("dave").await, "room-full");
    // Nobody was dropped.
    let (_, rooms) = get(admin, "/rooms", None).await;
    let rooms: serde_json::Value = serde_json::from_str(&rooms).expect("JSON");
    let ice: Vec<&str> =
        rooms[0]["participants"].as_array().map(|p| p.iter().filter_map(|p| p["ice"].as_str()).collect()).unwrap_or_default();
    assert_eq!(ice, ["connected", "connected"], "{rooms}");
    for peer in [&alice, &bob] {
        let states = peer.seen.ice.lock().expect("lock").clone();
        assert!(!states.iter().any(|s| s.to_string() != "checking" && s.to_string() != "connected"), "{states:?}");
    }

    // A broken file is refused, located, and the pipeline runs on.
    std::fs::write(&pipeline_path, pipeline(2, "config = { panic-every = 1000000 }\nlimits = { deadline = \"forever\" }\n"))
        .expect("broken pipeline");
    let (status, body) = post(admin, "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("pipeline.toml:14:23"), "the error is located: {body}");
    std::fs::write(&pipeline_path, pipeline(2, "").replace("[server]", "[server]\nrate = 10")).expect("reshaped pipeline");
    let (status, body) = post(admin, "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("restart the node"), "{body}");
    assert_eq!(digest(&get(admin, "/stages/forward", None).await.1), Some(hex(faulty)));
    let before = bob.received();
    bob.seen.until("packets after the refused reloads", Duration::from_secs(5), |s| s.packets.load(Ordering::Relaxed) > before + 20).await;
    talking.store(false, Ordering::Relaxed);
    let _ = talker.await;
}

/// `--watch`: saving a new config for a stage reloads it, with no request.
#[test]
fn watch_reloads_when_the_file_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("pipeline.toml");
    let before = format!("{SIGNALING_NODE}config = {{ max-room-size = 50 }}\n");
    let mut node = Node::spawn_with(dir, &before, &[(WATCH_VAR, "1")]);
    node.wait_for("watching for changes");
    std::fs::write(&path, before.replace("50", "3")).expect("save");
    node.wait_for("pipeline reloaded");
    assert!(node.log().contains("replaced=[\"rooms\"]"), "{}", node.log());
}
