//! Restart backoff, intensity and failure policies, timed on tokio's paused
//! clock: a 10 ms tick is exactly 10 ms of virtual time, so which block each
//! restart lands on is exact.

use crate::common::run;

/// 100 blocks through a stage that traps on every block.
fn always_trapping(restart: &str, failure: &str) -> String {
    format!(
        r#"
        [pipeline]
        pace = "realtime"
        tick = "10ms"
        # The paused clock's ticks take no time, but building an instance
        # does: room for it, so that no stage is late.
        budget = "2s"

        [[source]]
        id = "tone"
        kind = "tone"
        count = 100

        [[stage]]
        id = "broken"
        plugin = "stock:faulty"
        inputs = ["tone"]
        config = {{ fault = "panic", every = 1 }}
        limits = {{ deadline = "1s" }}
        restart = {{ {restart} }}
        failure = "{failure}"

        [[sink]]
        id = "out"
        kind = "channel"
        inputs = ["broken"]
        capacity = 1000
        "#
    )
}

fn poisons(run: &crate::common::Run) -> Vec<u64> {
    run.reports.iter().filter_map(|r| r.poison.as_ref()).map(|p| p["sequence"].as_u64().unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_from_an_immediate_first_restart() {
    let run = run(&always_trapping(
        r#"backoff-base = "100ms", backoff-cap = "1s", jitter = 0.0, max-restarts = 100, window = "10s""#,
        "fail-closed",
    ))
    .await;
    // Block 0 traps; the standby serves block 1 at once, which traps; then
    // the delays are 100, 200, 400 ms: blocks 11, 31 and 71 (at 110, 310
    // and 710 ms) meet new instances; the next (at 1510 ms) is past the end.
    assert_eq!(poisons(&run), vec![0, 1, 11, 31, 71]);
    let delays: Vec<f64> = run.reports.iter().map(|r| r.next_delay_ms.unwrap()).collect();
    assert_eq!(delays, vec![0.0, 100.0, 200.0, 400.0, 800.0]);
    // Audio keeps its timing: every block came out, muted (5 quarantined,
    // 95 met the policy while no instance could serve).
    assert_eq!(run.metric("broken", "muted"), 100);
    assert_eq!(run.sequences("out"), (0..100).collect::<Vec<_>>());
    assert_eq!(run.silent("out").len(), 100);
}

#[tokio::test(start_paused = true)]
async fn intensity_trips_and_fail_closed_mutes_for_good() {
    let run = run(&always_trapping(r#"backoff-base = "10ms", jitter = 0.0, max-restarts = 3, window = "10s""#, "fail-closed")).await;
    // Faults at blocks 0, 1 (then 10 ms), 2 (then 20 ms), 4: the fourth
    // failure in the window is one more than max-restarts allows.
    assert_eq!(poisons(&run), vec![0, 1, 2, 4]);
    let decisions: Vec<_> = run.reports.iter().map(|r| r.decision).collect();
    assert_eq!(decisions, vec!["restart", "restart", "restart", "give-up"]);
    assert_eq!(run.metric("broken", "faults"), 4);
    assert_eq!(run.metric("broken", "muted"), 100);
    assert_eq!(run.silent("out"), (0..100).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn fail_open_bypasses_the_stage_once_it_gives_up() {
    let run = run(&always_trapping(r#"backoff-base = "10ms", jitter = 0.0, max-restarts = 3, window = "10s""#, "fail-open")).await;
    // Every block passes around the stage, in order, the four quarantined
    // ones included (fail-open passes a block the plugin trapped on).
    assert_eq!(run.sequences("out"), (0..100).collect::<Vec<_>>());
    assert!(run.silent("out").is_empty());
    assert_eq!(run.metric("broken", "bypassed"), 100);
    assert_eq!(run.metric("broken", "quarantined"), 4);
}

#[tokio::test(start_paused = true)]
async fn stop_policy_stops_the_pipeline() {
    let run = run(&always_trapping(r#"backoff-base = "10ms", max-restarts = 2, window = "10s""#, "stop")).await;
    let stopped = run.result.as_ref().err().expect("the pipeline should stop");
    assert_eq!(stopped.stage, "broken");
    assert!(stopped.to_string().contains("failure policy is `stop`"), "{stopped}");
    assert_eq!(run.reports.last().unwrap().decision, "give-up");
}

#[tokio::test(start_paused = true)]
async fn without_standby_restarts_start_a_fresh_instance() {
    let run = run(&always_trapping(r#"standby = false, backoff-base = "100ms", jitter = 0.0, max-restarts = 100"#, "fail-closed")).await;
    assert_eq!(poisons(&run), vec![0, 1, 11, 31, 71]);
    let recorded = &run.reports.last().unwrap().recorded;
    let restarts: Vec<_> = recorded
        .iter()
        .filter_map(|r| match r.action {
            medianode_core::supervision::recorder::Action::Restart { standby, .. } => Some(standby),
            _ => None,
        })
        .collect();
    assert!(!restarts.is_empty() && restarts.iter().all(|s| !s), "{restarts:?}");
}
