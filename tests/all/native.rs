//! Native plugins (shared libraries loaded with libloading, unsandboxed):
//! the example native gain runs bit-exact beside its wasm twin; a panic is
//! caught at the boundary and handled like a wasm trap; a library of
//! another ABI version, or without the entry point, is refused with a
//! clear error; and a native library without `trust = "native"` (or that
//! opt-in on a wasm component) is refused by `check` at the line that
//! says so.

use crate::common::{beside, run, runtime};
use medianode::check::{CheckError, check_file};
use std::path::{Path, PathBuf};

/// The libraries `tests/build.rs` built.
const NATIVE_GAIN: &str = env!("MEDIANODE_NATIVE_GAIN");
const NATIVE_FAULTY: &str = env!("MEDIANODE_NATIVE_FAULTY");

/// The example native gain and `stock:gain` (its wasm twin: the same
/// `medianode_dsp::gain::Gain`) on the same tone give the same bits, and
/// the native stage's level reaches the host.
#[tokio::test(start_paused = true)]
async fn a_native_plugin_runs_bit_exact_beside_its_wasm_twin() {
    let stage = format!("plugin = {NATIVE_GAIN:?}\ntrust = \"native\"\nconfig = {{ gain-db = -6.0 }}");
    let text = beside(100, "", "native", &stage).replace(
        "plugin = \"stock:gain\"\n        inputs = [\"tone\"]",
        "plugin = \"stock:gain\"\n        inputs = [\"tone\"]\n        config = { gain-db = -6.0 }",
    );
    let run = run(&text).await;
    assert_eq!(run.sequences("out"), (0..100).collect::<Vec<_>>());
    let samples = |sink: &str| -> Vec<u32> {
        run.channels[sink]
            .iter()
            .flat_map(|items| match items {
                medianode::runtime::Items::Audio(batch) => batch.samples.clone(),
                _ => Vec::new(),
            })
            .collect()
    };
    let (native, wasm) = (samples("out"), samples("beside-out"));
    assert_eq!(native.len(), 100 * 480);
    assert!(native == wasm, "the native and the wasm gain differ");
    assert!(run.silent("out").is_empty());
    assert_eq!(run.metric("native", "faults"), 0);
}

/// A panic in a native plugin is caught at the boundary: the block is
/// quarantined and muted, the standby (another `create`) serves the next,
/// and the crash report carries the panic's message and place.
#[tokio::test(start_paused = true)]
async fn a_native_panic_is_caught_and_the_stage_restarts() {
    let stage = format!(
        "plugin = {NATIVE_FAULTY:?}\ntrust = \"native\"\nconfig = {{ fault = \"panic\", every = 50 }}\nrestart = {{ healthy-after = \"100ms\", jitter = 0.0 }}"
    );
    let run = run(&beside(200, "", "faulty", &stage)).await;
    let poisoned = [49, 99, 149, 199];
    assert_eq!(run.sequences("beside-out"), (0..200).collect::<Vec<_>>(), "the neighbour lost items");
    assert_eq!(run.sequences("out"), (0..200).collect::<Vec<_>>());
    assert_eq!(run.silent("out"), poisoned);
    assert_eq!(run.metric("faulty", "faults"), 4);
    assert_eq!(run.metric("faulty", "quarantined"), 4);
    assert_eq!(run.metric("faulty", "restarts"), 3);
    assert_eq!(run.report_kinds(), vec!["panic"; 4]);
    for (report, block) in run.reports.iter().zip(poisoned) {
        let said = report.plugin_message.as_deref().unwrap_or_default();
        assert!(said.contains(&format!("planned panic on block {block}")) && said.contains("faulty/src/lib.rs"), "{said}");
    }
}

/// A pipeline file in a fresh directory whose one stage runs `plugin` with
/// `extra` settings; returns its path (and the directory, to keep).
fn pipeline_with(plugin: &Path, extra: &str) -> (PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("native.toml");
    let text = format!(
        "[[source]]\nid = \"tone\"\nkind = \"tone\"\ncount = 10\n\n[[stage]]\nid = \"gain\"\nplugin = {:?}\n{extra}inputs = [\"tone\"]\n\n[[sink]]\nid = \"out\"\nkind = \"null\"\ninputs = [\"gain\"]\n",
        plugin.display().to_string()
    );
    std::fs::write(&path, text).expect("write");
    (path, dir)
}

/// `check` on a pipeline; its errors as text, or its summary.
fn check(path: &Path) -> Result<String, String> {
    match check_file(runtime(), path) {
        Ok(summary) => Ok(summary),
        Err(CheckError::Config(errors)) => Err(errors.to_string()),
    }
}

#[test]
fn check_refuses_a_native_library_without_the_opt_in_at_its_line() {
    let (path, _dir) = pipeline_with(Path::new(NATIVE_GAIN), "");
    let shown = check(&path).expect_err("a native library without trust must be refused");
    assert!(shown.contains(&format!("{}:8:10", path.display())), "located at the plugin: {shown}");
    assert!(shown.contains("is a native library") && shown.contains("trust = \"native\""), "{shown}");

    // With the opt-in it checks, and check says it is not isolated.
    let (path, _dir) = pipeline_with(Path::new(NATIVE_GAIN), "trust = \"native\"\n");
    let summary = check(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains("NOT isolated"), "{summary}");

    // The opt-in on a wasm component, or with an unknown value, is refused where it is written.
    let wasm = medianode::runtime::stock::path("gain").expect("stock gain");
    let (path, _dir) = pipeline_with(Path::new(wasm), "trust = \"native\"\n");
    let shown = check(&path).expect_err("trust = native on a component");
    assert!(shown.contains(&format!("{}:9:9", path.display())) && shown.contains("is a wasm component"), "{shown}");
    let (path, _dir) = pipeline_with(Path::new(NATIVE_GAIN), "trust = \"yes\"\n");
    let shown = check(&path).expect_err("an unknown trust");
    assert!(shown.contains(&format!("{}:9:9", path.display())) && shown.contains("unknown trust `yes`"), "{shown}");
}

/// Compiles `source` into a shared library with rustc, as another SDK (or
/// another language) would have built it.
fn compile_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.rs"));
    std::fs::write(&src, source).expect("write source");
    let out = dir.join(format!("lib{name}.so"));
    let status = std::process::Command::new("rustc")
        .args(["--edition", "2024", "--crate-type", "cdylib", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("rustc");
    assert!(status.success(), "rustc failed on {name}");
    out
}

#[test]
fn a_library_of_another_abi_or_without_the_entry_point_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Version 2's table, of which the node must read the version only.
    let future = compile_library(
        dir.path(),
        "future",
        r#"
        #[repr(C)] pub struct Table { abi_version: u32, something_new: [u64; 4] }
        static TABLE: Table = Table { abi_version: 2, something_new: [7; 4] };
        #[unsafe(no_mangle)] pub extern "C" fn medianode_native_plugin() -> *const Table { &TABLE }
        "#,
    );
    let (path, _keep) = pipeline_with(&future, "trust = \"native\"\n");
    let shown = check(&path).expect_err("another ABI version");
    assert!(shown.contains(&format!("{}:8:10", path.display())), "{shown}");
    assert!(shown.contains("ABI version 2; this node speaks version 1") && shown.contains("rebuild it against medianode-sdk"), "{shown}");

    let unrelated = compile_library(dir.path(), "unrelated", "#[unsafe(no_mangle)] pub extern \"C\" fn hello() -> u32 { 1 }");
    let (path, _keep) = pipeline_with(&unrelated, "trust = \"native\"\n");
    let shown = check(&path).expect_err("no entry point");
    assert!(shown.contains("without `medianode_native_plugin`") && shown.contains("export_native_audio_dsp!"), "{shown}");
}
