//! Each way a plugin can fail, while items flow: the node survives, the
//! faulty stage serves again at once (standby), the stage beside it loses
//! nothing, every fault leaves a crash report of the right kind, and the
//! input that caused it is quarantined, never retried.

use crate::common::run;

/// 200 blocks (2 s of audio on a paused clock); the faulty stage fails on
/// every block with `sequence % 50 == 49`; a gain stage reads the same tone.
fn pipeline(fault: &str, trigger: &str, extra: &str) -> String {
    let stage = format!(
        r#"plugin = "stock:faulty"
        config = {{ fault = "{fault}", {trigger} }}
        limits = {{ memory = "8MiB", stack = "256KiB", deadline = "50ms" }}
        restart = {{ healthy-after = "100ms", jitter = 0.0 }}"#
    );
    crate::common::beside(200, extra, "faulty", &stage)
}

const POISONED: [u64; 4] = [49, 99, 149, 199];

async fn check_fault(fault: &str, trigger: &str, extra: &str, kind: &str) {
    let run = run(&pipeline(fault, trigger, extra)).await;

    // The stage beside lost nothing.
    assert_eq!(run.sequences("beside-out"), (0..200).collect::<Vec<_>>(), "{fault}: the neighbour lost items");
    // The faulty stage passed on every block, in order: the poisoned ones
    // muted (an audio stream keeps its timing), the next one served each time.
    assert_eq!(run.sequences("out"), (0..200).collect::<Vec<_>>(), "{fault}: wrong blocks out of the faulty stage");
    assert_eq!(run.silent("out"), POISONED, "{fault}: wrong blocks muted");
    assert_eq!(run.metric("faulty", "muted"), 4, "{fault}");
    // One fault per poisoned block: none was retried (a retry would fault again).
    assert_eq!(run.metric("faulty", "faults"), 4, "{fault}");
    assert_eq!(run.metric("faulty", "quarantined"), 4, "{fault}");
    assert_eq!(run.metric("faulty", "restarts"), 3, "{fault}: the fault on the last block needs no restart");
    assert_eq!(run.metric("beside", "faults"), 0);
    // A crash report per fault, of the right kind, naming the poison, on disk too.
    assert_eq!(run.report_kinds(), vec![kind; 4], "{fault}");
    let poisons: Vec<u64> = run.reports.iter().map(|r| r.poison.as_ref().unwrap()["sequence"].as_u64().unwrap()).collect();
    assert_eq!(poisons, POISONED);
    assert_eq!(run.report_files.len(), 4);
    for file in &run.report_files {
        assert_eq!(file["trap_kind"], kind);
        assert_eq!(file["stage"], "faulty");
        assert_eq!(file["plugin"], "stock:faulty");
        assert_eq!(file["digest"].as_str().unwrap().len(), 64);
        assert_eq!(file["decision"], "restart");
        assert_eq!(file["next_delay_ms"], 0.0);
        assert!(!file["backtrace"].as_array().unwrap().is_empty() || kind == "deadline", "{file}");
        assert!(file["recorded"].as_array().unwrap().iter().any(|r| r["action"] == "call"), "{file}");
    }
}

#[tokio::test(start_paused = true)]
async fn panic() {
    check_fault("panic", "every = 50", "", "panic").await;
}

#[tokio::test(start_paused = true)]
async fn unreachable_instruction() {
    check_fault("unreachable", "every = 50", "", "unreachable").await;
}

#[tokio::test(start_paused = true)]
async fn endless_loop_hits_the_deadline() {
    check_fault("loop", "every = 50", "", "deadline").await;
}

#[tokio::test(start_paused = true)]
async fn slower_than_the_deadline() {
    check_fault("slow", "every = 50, slow-ms = 200", "", "deadline").await;
}

#[tokio::test(start_paused = true)]
async fn memory_bomb_hits_the_memory_limit() {
    check_fault("memory-bomb", "every = 50", "", "memory-limit").await;
}

#[tokio::test(start_paused = true)]
async fn stack_overflow() {
    check_fault("stack-overflow", "every = 50", "", "stack-overflow").await;
}

#[tokio::test(start_paused = true)]
async fn poison_input_only() {
    // The source marks blocks 49, 99, ... with a NaN; the plugin traps on NaN.
    check_fault("panic", "on-poison = true", "poison-every = 50", "panic").await;
}

#[tokio::test(start_paused = true)]
async fn panic_message_and_backtrace_reach_the_report() {
    let run = run(&pipeline("panic", "every = 50", "")).await;
    let report = &run.reports[0];
    let said = report.plugin_message.as_deref().unwrap_or_default();
    assert!(said.contains("planned panic on block 49"), "{said}");
    assert!(report.backtrace.iter().any(|f| f.contains("medianode_faulty::fail")), "{:?}", report.backtrace);
    assert_eq!(report.poison.as_ref().unwrap()["type"], "audio-block");
}

/// `init` traps in the two instances started after the first: the standby
/// fails to start twice (each a crash report, retried with backoff), then
/// starts, and the stage keeps serving throughout.
#[tokio::test(start_paused = true)]
async fn trap_in_init() {
    let run = run(&pipeline("panic", "every = 50, init-failures = 2", "")).await;
    assert_eq!(run.sequences("beside-out").len(), 200);
    let kinds = run.report_kinds();
    assert_eq!(kinds, vec!["panic"; 6], "two init traps and four block traps");
    let init_traps: Vec<_> = run.reports.iter().filter(|r| r.poison.is_none()).collect();
    assert_eq!(init_traps.len(), 2);
    assert!(init_traps.iter().all(|r| r.plugin_message.as_deref().is_some_and(|m| m.contains("planned panic in init"))));
    assert!(init_traps[1].next_delay_ms.unwrap() > 0.0, "the second init failure backs off");
    // Blocks muted: the four poisoned ones, nothing while the standby was failing.
    assert_eq!(run.sequences("out"), (0..200).collect::<Vec<_>>());
    assert_eq!(run.silent("out"), POISONED);
}
