//! A DSP stage that traps on a schedule in a 10-second stream: the stream
//! never stops. Every block reaches the sink once, in order, and exactly the
//! blocks the stage trapped on are muted (`fail-closed`) or passed through
//! untouched (`fail-open`); all others are processed.

use crate::common::{Run, run};
use medianode::runtime::Items;

/// 1000 blocks of 10 ms; a gain stage halves the tone, then the faulty
/// stage traps on every block whose sequence % 97 == 96.
fn stream(fault: &str, failure: &str) -> String {
    format!(
        r#"
        [pipeline]
        pace = "realtime"
        tick = "10ms"
        # The paused clock's ticks take no time, but a trap on a 50 ms
        # deadline does: room for it, so that no stage is late.
        budget = "2s"
        [[source]]
        id = "tone"
        kind = "tone"
        amplitude = 0.5
        count = 1000
        [[stage]]
        id = "half"
        plugin = "stock:gain"
        inputs = ["tone"]
        config = {{ gain-db = -6.0206, smoothing-ms = 0 }}
        limits = {{ deadline = "1s" }}
        [[stage]]
        id = "flaky"
        plugin = "stock:faulty"
        inputs = ["half"]
        config = {{ fault = "{fault}", every = 97 }}
        limits = {{ deadline = "20ms" }}
        restart = {{ healthy-after = "200ms", max-restarts = 5, window = "1s" }}
        failure = "{failure}"
        [[sink]]
        id = "raw"
        kind = "channel"
        inputs = ["tone"]
        capacity = 2000
        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["flaky"]
        capacity = 2000
        "#
    )
}

const TRAPPED: [u64; 10] = [96, 193, 290, 387, 484, 581, 678, 775, 872, 969];

/// Each output block against its input: "processed" (the halved tone),
/// "muted", or "other" (corrupt).
fn classify(run: &Run) -> Vec<(u64, &'static str)> {
    let blocks = |sink: &str| -> Vec<(u64, Vec<f32>)> {
        run.channels[sink]
            .iter()
            .flat_map(|items| match items {
                Items::Audio(batch) => batch.iter().map(|(b, s)| (b.sequence, s.to_vec())).collect::<Vec<_>>(),
                Items::Frames(_) => panic!("audio expected"),
            })
            .collect()
    };
    let (raw, out) = (blocks("raw"), blocks("out"));
    assert_eq!(raw.len(), out.len(), "one block out per block in");
    raw.iter()
        .zip(&out)
        .map(|((seq_in, x), (seq_out, y))| {
            assert_eq!(seq_in, seq_out, "blocks in order");
            let kind = if x.iter().zip(y).all(|(a, b)| (a * 0.5 - b).abs() < 1e-6) {
                "processed"
            } else if y.iter().all(|&s| s == 0.0) {
                "muted"
            } else {
                "other"
            };
            (*seq_out, kind)
        })
        .collect()
}

fn check(run: &Run, stand_in: &str) {
    let classes = classify(run);
    assert_eq!(classes.iter().map(|(s, _)| *s).collect::<Vec<_>>(), (0..1000).collect::<Vec<_>>(), "every block, in order");
    for (sequence, kind) in classes {
        let want = if TRAPPED.contains(&sequence) { stand_in } else { "processed" };
        assert_eq!(kind, want, "block {sequence}");
    }
    assert_eq!(run.metric("flaky", "faults"), 10);
    assert_eq!(run.metric("flaky", "quarantined"), 10);
    assert_eq!(run.stats().sink("out").unwrap().get().missing, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stage_that_panics_every_97_blocks_mutes_exactly_those_blocks() {
    let run = run(&stream("panic", "fail-closed")).await;
    check(&run, "muted");
    assert_eq!(run.metric("flaky", "muted"), 10);
}

/// The faulty stage's own output is its input (here: the halved tone), so a
/// block passed around it under fail-open looks "processed" too; what
/// counts is that none is lost, doubled or reordered, and that the endless
/// loops were cut by the deadline.
#[tokio::test(start_paused = true)]
async fn a_stage_that_loops_forever_every_97_blocks_passes_them_through() {
    let run = run(&stream("loop", "fail-open")).await;
    check(&run, "processed");
    assert_eq!(run.metric("flaky", "bypassed"), 10);
    assert!(run.reports.iter().all(|r| r.trap_kind.name() == "deadline"));
}
