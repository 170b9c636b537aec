//! Simulcast through a real browser and a real bottleneck.
//!
//! One headless Chromium, two windows of the node's room page: a publisher
//! whose fake camera (1280x720) goes out in three layers (320x180,
//! 640x360, 1280x720), and a viewer whose downlink is limited to
//! 300 kbit/s by the kernel (`tc` on the loopback of a network namespace
//! this test makes, so nothing else on the machine is shaped). The node
//! estimates the viewer's bandwidth from its transport-wide congestion
//! control feedback; the stock forwarding stage gives it the layer that
//! fits. The viewer must decode the low layer while limited, and a higher
//! one once the limit is lifted; the node's own counters must show the
//! layer switches and the keyframe requests that made them.
//!
//! Needs root (a network namespace, `tc`) and Debian's `chromium`.

use crate::browser::{DevTools, launch};
use crate::browser_e2ee::default_node;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

/// What the viewer receives of the publisher's video (its first video).
const VIDEO_IN: &str = "window.medianode.videoIn().then(v => v.length ? v[0] : null)";

/// The page's local UDP port (its selected candidate pair's local end).
const LOCAL_PORT: &str = "(async () => { const m = window.medianode.media; if (!m || !m.pc) return null; \
    const s = await m.pc.getStats(); let pair = null; \
    s.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = s.get(r.selectedCandidatePairId); }); \
    const local = pair && s.get(pair.localCandidateId); return local ? local.port : null; })()";

/// Runs `program` with `args`; panics with its error output if it fails.
fn run(program: &str, args: &[&str]) {
    let out =
        Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} does not run ({e}): apt-get install iproute2"));
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Moves the calling thread (and every thread and process it starts from
/// now on) into a network namespace of its own, with its loopback up.
fn own_network() {
    // SAFETY: unshare affects only the calling thread's namespaces.
    let done = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(done, 0, "this test makes a network namespace (root only): {}", std::io::Error::last_os_error());
    run("ip", &["link", "set", "lo", "up"]);
}

/// A rate limit on UDP datagrams to one port, on this namespace's
/// loopback (an HTB class with a filter on the destination port); lifted
/// when dropped.
struct Bottleneck;

impl Bottleneck {
    fn limit(port: u16, rate: &str) -> Bottleneck {
        let port = port.to_string();
        run("tc", &["qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "10", "r2q", "10000"]);
        run("tc", &["class", "add", "dev", "lo", "parent", "1:", "classid", "1:10", "htb", "rate", "10gbit"]);
        run("tc", &["class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", rate, "ceil", rate]);
        // A queue of a router's size (30 datagrams), not loopback's 1000:
        // seconds of queueing would hide the limit from any estimator.
        run("tc", &["qdisc", "add", "dev", "lo", "parent", "1:20", "handle", "20:", "pfifo", "limit", "30"]);
        let filter = ["filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32"];
        let matches = ["match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", &port, "0xffff", "flowid", "1:20"];
        run("tc", &[&filter[..], &matches[..]].concat());
        Bottleneck
    }
}

impl Drop for Bottleneck {
    fn drop(&mut self) {
        let _ = Command::new("tc").args(["qdisc", "del", "dev", "lo", "root"]).status();
    }
}

fn width(v: &Value) -> u64 {
    v["width"].as_u64().unwrap_or(0)
}

#[test]
fn a_limited_viewer_gets_the_low_layer_and_moves_up_when_the_limit_goes() {
    let scenario = std::thread::spawn(|| {
        own_network();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(limited_viewer());
    });
    if let Err(panic) = scenario.join() {
        std::panic::resume_unwind(panic);
    }
}

async fn limited_viewer() {
    medianode::telemetry::init(medianode::telemetry::LogFormat::Text);
    let node = default_node().await;
    let browser = launch();
    let (ws, _) = tokio_tungstenite::connect_async(browser.devtools.as_str()).await.expect("devtools connects");
    let mut dt = DevTools { ws, next_id: 0 };
    let base = format!("http://{}/?room=layers&autojoin=1", node.server.addr);

    // The viewer first (no camera): its downlink is limited before any
    // video reaches it.
    let viewer = dt.open("viewer", &format!("{base}&user=viewer&camera=0")).await;
    dt.until(&viewer, "the viewer's media connected", LOCAL_PORT, Duration::from_secs(30), Value::is_u64).await;
    let port = dt.eval(&viewer, LOCAL_PORT).await.as_u64().and_then(|p| u16::try_from(p).ok()).expect("a port");
    let bottleneck = Bottleneck::limit(port, "300kbit");
    let publisher = dt.open("publisher", &format!("{base}&user=publisher")).await;

    // Limited: the low layer (a quarter of 1280), decoded.
    let low = |v: &Value| (1..=320).contains(&width(v)) && v["decoded"].as_u64().is_some_and(|d| d > 60);
    let took = dt.until(&viewer, "the low layer", VIDEO_IN, Duration::from_secs(60), low).await;
    let limited = node.sfu.stats();
    eprintln!("limited to 300 kbit/s: the low layer after {took:?}; node: {limited:?}");
    assert!(limited.keyframe_requests > 0, "keyframes were asked for: {limited:?}");

    // Lifted: a higher layer, reached by a switch the node asked a keyframe for.
    drop(bottleneck);
    let took = dt.until(&viewer, "a higher layer", VIDEO_IN, Duration::from_secs(90), |v| width(v) > 320).await;
    let lifted = node.sfu.stats();
    let got = dt.eval(&viewer, VIDEO_IN).await;
    eprintln!("unlimited: {got} after {took:?}; node: {lifted:?}");
    assert!(lifted.layer_switches > limited.layer_switches, "a layer switch after the limit went: {limited:?} then {lifted:?}");
    assert!(lifted.keyframe_requests > limited.keyframe_requests, "a keyframe asked for the switch: {limited:?} then {lifted:?}");
    let published = dt.eval(&publisher, "window.medianode.media.pc.getStats().then(r => { let n = 0; r.forEach(s => { if (s.type === 'outbound-rtp' && s.kind === 'video' && s.frameWidth) n += 1; }); return n; })").await;
    assert!(published.as_u64() >= Some(2), "the publisher sends simulcast layers: {published}");
}
