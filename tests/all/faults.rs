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

/// A call that the machine takes the CPU away from is not a slow call
/// (`runtime::deadline`). The thread calling the plugin is held in a signal
/// handler, as a busy host would deschedule it, 1 ms into a call that
/// computes for 8 ms under a 10 ms deadline: held 30 ms, the call is no
/// fault (it was, when deadlines were wall-clock time); held 200 ms, past
/// the deadline and its 100 ms of grace, it is stopped (a call blocked
/// without using the CPU still ends).
#[test]
fn a_descheduled_call_is_not_a_slow_call() {
    use medianode::runtime::bindings::BlockInfo;
    use medianode::runtime::{AudioBatch, Items};
    use std::time::{Duration, Instant};
    held::install();
    // One call held `hold` from 1 ms in; again if the machine woke the
    // holder only after the call (it then holds the waiting test instead).
    let call = |hold: Duration| {
        for _ in 0..20 {
            let config = r#"{"fault": "slow", "every": 1, "slow-ms": 8}"#;
            let mut stage = crate::common::stock_stage_with_deadline("faulty", config, Duration::from_millis(10));
            let mut batch = AudioBatch::new();
            batch.push(BlockInfo { sequence: 0, sample_rate: 48_000, channels: 1, frames: 480, level: None }, &[0.25; 480]);
            let holder = held::hold_this_thread_after(Duration::from_millis(1), hold);
            let started = Instant::now();
            let out = stage.process(Instant::now(), Items::Audio(batch));
            let took = started.elapsed();
            holder.join().expect("holder");
            assert!(out.is_ok());
            if took >= hold {
                return (took, stage.shared().snapshot()["faults"].as_u64().expect("faults"));
            }
        }
        panic!("the holder never caught the call in 20 tries");
    };
    let (took, faults) = call(Duration::from_millis(30));
    assert_eq!(faults, 0, "a call of {took:?} that used less than its deadline was stopped");
    let (took, faults) = call(Duration::from_millis(200));
    assert_eq!(faults, 1, "a call held {took:?}, past its deadline and the grace, was not stopped");
}

/// Holding a thread the way a busy machine does: a signal whose handler
/// sleeps, so that the thread stops running (and using CPU) for a while.
mod held {
    use std::time::Duration;

    static HOLD_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

    extern "C" fn hold(_: libc::c_int) {
        let us = HOLD_US.load(std::sync::atomic::Ordering::SeqCst);
        let ts = libc::timespec { tv_sec: (us / 1_000_000) as libc::time_t, tv_nsec: ((us % 1_000_000) * 1000) as libc::c_long };
        // SAFETY: nanosleep is async-signal-safe; both pointers are valid.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }

    /// SIGUSR1 holds the thread that gets it.
    pub fn install() {
        // SAFETY: a plain handler for a signal nothing else in this
        // process uses, installed with a zeroed (empty) mask.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = hold as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut());
        }
    }

    /// After `after`, holds the calling thread for `hold`.
    pub fn hold_this_thread_after(after: Duration, hold: Duration) -> std::thread::JoinHandle<()> {
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() };
        HOLD_US.store(hold.as_micros() as u64, std::sync::atomic::Ordering::SeqCst);
        std::thread::spawn(move || {
            std::thread::sleep(after); // into the plugin's 5 ms of work
            // SAFETY: `me` is waiting for this thread's join, so it is alive.
            unsafe { libc::pthread_kill(me, libc::SIGUSR1) };
        })
    }
}
