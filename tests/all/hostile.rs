//! A plugin is an adversary: one test per attack of `stock:hostile`, each
//! beside a healthy chain reading the same source. Every test asserts that
//! the node lives on (the pipeline ends normally), that the chain beside
//! missed no block and got no silence, that what the plugin wrote to the
//! log stayed within its budget, and the attack's own effect (a fault of
//! the right kind, a counter of what was dropped).

use crate::common::{Run, run};
use std::time::Instant;

const BLOCKS: u64 = 100;

/// The log budget the tests give the hostile stage: lines and bytes a second.
const LOG_LINES: u64 = 20;
const LOG_BYTES: u64 = 4096;

fn pipeline(config: &str, limits: &str) -> String {
    let stage = format!(
        r#"plugin = "stock:hostile"
        config = {{ {config} }}
        limits = {{ log-lines = {LOG_LINES}, log = "4KiB", {limits} }}
        restart = {{ max-restarts = 1000, long-max-restarts = 1000, healthy-after = "100ms", jitter = 0.0 }}"#
    );
    crate::common::beside(BLOCKS, "", "hostile", &stage)
}

/// Runs an attack and checks what every attack must leave true.
async fn attack(config: &str, limits: &str) -> Run {
    let started = Instant::now();
    let run = run(&pipeline(config, limits)).await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(run.result.is_ok(), "{config}: the pipeline did not end normally");
    assert_eq!(run.sequences("beside-out"), (0..BLOCKS).collect::<Vec<_>>(), "{config}: the chain beside lost blocks");
    assert!(run.silent("beside-out").is_empty(), "{config}: the chain beside got silence");
    assert_eq!(run.sequences("out"), (0..BLOCKS).collect::<Vec<_>>(), "{config}: the hostile chain lost its timing");
    // The log budget: a burst of four seconds' worth, then the rate.
    let allowed = |per_second: u64| per_second as f64 * (4.0 + seconds + 1.0);
    let lines = run.metric("hostile", "log_lines");
    let bytes = run.metric("hostile", "log_bytes");
    assert!((lines as f64) <= allowed(LOG_LINES), "{config}: {lines} log lines in {seconds:.1} s");
    assert!((bytes as f64) <= allowed(LOG_BYTES), "{config}: {bytes} log bytes in {seconds:.1} s");
    run
}

fn faults(run: &Run) -> u64 {
    run.metric("hostile", "faults")
}

#[tokio::test(start_paused = true)]
async fn println_goes_to_the_stage_log() {
    let run = attack(r#"attack = "println""#, "").await;
    assert_eq!(faults(&run), 0);
    assert!(run.metric("hostile", "log_lines") > 0, "stdout reached the log");
    assert!(run.metric("hostile", "log_dropped_lines") > 0, "over budget: counted as dropped");
}

#[tokio::test(start_paused = true)]
async fn eprintln_goes_to_the_stage_log() {
    let run = attack(r#"attack = "eprintln""#, "").await;
    assert_eq!(faults(&run), 0);
    assert!(run.metric("hostile", "log_lines") > 0);
}

#[tokio::test(start_paused = true)]
async fn a_stdout_flood_is_cut_and_dropped() {
    let run = attack(r#"attack = "print-flood", size = 1000000, lines = 100"#, r#"deadline = "1s""#).await;
    assert_eq!(faults(&run), 0);
    assert!(run.metric("hostile", "log_truncated") > 0, "the megabyte line was cut");
    assert!(run.metric("hostile", "log_dropped_bytes") > 1_000_000);
}

#[tokio::test(start_paused = true)]
async fn stdin_is_empty() {
    let run = attack(r#"attack = "stdin""#, "").await;
    assert_eq!(faults(&run), 0);
}

#[tokio::test(start_paused = true)]
async fn a_sleep_ends_at_the_deadline() {
    let started = Instant::now();
    let run = attack(r#"attack = "sleep", ms = 10000, every = 25"#, r#"deadline = "5ms""#).await;
    assert_eq!(faults(&run), 4, "each 10 s sleep is one deadline trap");
    assert!(run.report_kinds().iter().all(|k| *k == "deadline"), "{:?}", run.report_kinds());
    assert!(started.elapsed().as_secs() < 10, "no sleep ran its course");
}

#[tokio::test(start_paused = true)]
async fn sockets_name_lookups_files_and_the_environment_are_closed() {
    for what in ["udp", "tcp", "dns", "file", "env", "clock"] {
        let run = attack(&format!(r#"attack = "{what}", every = 10"#), "").await;
        assert_eq!(faults(&run), 0, "{what}: the plugin sees an error, not a trap");
    }
}

#[tokio::test(start_paused = true)]
async fn metric_names_are_bounded() {
    for what in ["counters", "gauges"] {
        let run = attack(&format!(r#"attack = "{what}", size = 65536"#), "").await;
        assert_eq!(run.metric("hostile", "metrics_dropped"), BLOCKS, "{what}: every 64 KiB name refused");
        let run = attack(&format!(r#"attack = "{what}", size = 8"#), "").await;
        let series = run.stats().stage("hostile").expect("stage").metrics.snapshot()["plugin"].as_object().expect("plugin").len();
        assert_eq!(series, medianode::runtime::MAX_METRIC_SERIES, "{what}");
        assert_eq!(run.metric("hostile", "metrics_dropped"), BLOCKS - series as u64, "{what}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_state_store_keeps_its_quota() {
    let run = attack(r#"attack = "state", size = 100000"#, r#"state = "1MiB""#).await;
    assert_eq!(faults(&run), 0, "a refused write is an error the plugin sees");
    let used = run.stats().stage("hostile").expect("stage").state.lock().expect("state").used();
    assert!(used <= 1 << 20, "{used}");
}

#[tokio::test(start_paused = true)]
async fn a_log_flood_is_dropped_and_counted() {
    let run = attack(r#"attack = "log-flood", lines = 1000"#, "").await;
    assert!(run.metric("hostile", "log_dropped_lines") > 90_000);
    let run = attack(r#"attack = "log-huge", size = 16000000, every = 20"#, r#"memory = "128MiB", deadline = "1s""#).await;
    assert_eq!(run.metric("hostile", "log_truncated"), 5, "each 16 MB line cut");
}

#[tokio::test(start_paused = true)]
async fn the_default_panic_hook_reaches_the_report() {
    let run = attack(r#"attack = "panic-default-hook", every = 50"#, "").await;
    assert_eq!(run.report_kinds(), ["panic", "panic"]);
    let said = run.reports[0].plugin_message.as_deref().unwrap_or_default();
    assert!(said.contains("hostile panic through the default hook"), "{said}");
}

#[tokio::test(start_paused = true)]
async fn a_huge_panic_message_makes_a_small_report() {
    let run = attack(r#"attack = "huge-panic", size = 8000000, every = 50"#, r#"memory = "128MiB", deadline = "1s""#).await;
    assert_eq!(run.report_kinds(), ["panic", "panic"]);
    for report in &run.report_files {
        let size = serde_json::to_vec_pretty(report).expect("json").len();
        assert!(size <= 64 << 10, "a report of {size} bytes");
    }
}

#[tokio::test(start_paused = true)]
async fn plugin_text_cannot_forge_report_fields() {
    let run = attack(r#"attack = "forged-report", every = 50"#, "").await;
    for report in &run.reports {
        assert_eq!(report.stage, "hostile");
        assert_eq!(report.trap_kind.name(), "panic");
        assert_eq!(report.decision, "restart");
        assert!(!report.message.contains("forged"), "the host's message is the host's: {}", report.message);
    }
}

#[tokio::test(start_paused = true)]
async fn nan_and_infinity_become_silence() {
    let run = attack(r#"attack = "nan", every = 10"#, "").await;
    assert_eq!(run.metric("hostile", "non_finite"), 10);
    assert_eq!(run.silent("out"), (0..10).map(|i| i * 10 + 9).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn exit_is_a_fault_not_the_end_of_the_node() {
    let run = attack(r#"attack = "exit", every = 50"#, "").await;
    assert_eq!(faults(&run), 2);
}

#[tokio::test(start_paused = true)]
async fn init_that_loops_or_sleeps_after_a_crash_stalls_only_its_stage() {
    for what in ["init-loop", "init-sleep"] {
        let run = attack(&format!(r#"attack = "{what}", every = 30"#), r#"init-deadline = "200ms""#).await;
        assert!(faults(&run) >= 3, "{what}: the crash and the failed builds are faults");
        assert!(run.report_kinds().contains(&"deadline"), "{what}: init ran out of time: {:?}", run.report_kinds());
    }
}
