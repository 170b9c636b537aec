//! Builds the stock plugins and the page's E2EE module from source and
//! embeds them in the node.
//!
//! Runs a nested `cargo build --target wasm32-wasip2` over the plugin crates
//! (the way wasmtime's `test-programs/artifacts` does) with its own target
//! directory, then writes `stock.rs` into `OUT_DIR`: one `(name, path, bytes)` row
//! per plugin, the bytes embedded with `include_bytes!`. Then the same for
//! the browser: `plugins/e2ee-web` for wasm32-unknown-unknown, through
//! wasm-bindgen into an ES module and its wasm (`web.rs`). Nothing
//! prebuilt is committed; rustup adds the two targets when missing.

// A build script fails the build by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::env;
use std::path::PathBuf;
use std::process::Command;

/// (stock name, crate name) of every plugin the node ships.
const PLUGINS: &[(&str, &str)] = &[
    ("faulty-signaling", "medianode-faulty-signaling"),
    ("faulty-forward", "medianode-faulty-forward"),
    ("faulty-e2ee", "medianode-faulty-e2ee"),
    ("passthrough", "medianode-passthrough"),
    ("gain", "medianode-gain"),
    ("biquad", "medianode-biquad"),
    ("gate", "medianode-gate"),
    ("compressor", "medianode-compressor"),
    ("limiter", "medianode-limiter"),
    ("meter", "medianode-meter"),
    ("faulty", "medianode-faulty"),
    ("signaling", "medianode-signaling"),
    ("forward", "medianode-forward"),
    ("e2ee", "medianode-e2ee"),
    ("hostile", "medianode-hostile"),
];

/// The faulty wrappers link the stock stages without their exports (feature
/// `export` off), which a build together with the stock crates would turn
/// back on (features unify within one build): they get a build of their own,
/// first, because it also leaves an export-less `.wasm` of each stage it
/// wraps, which the stock build then replaces.
const SEPARATE_BUILD: usize = 3;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = workspace.join("target").join("plugins");

    println!("cargo:rerun-if-changed={}", workspace.join("plugins").display());

    ensure_target("wasm32-wasip2");
    let (wrappers, stock) = PLUGINS.split_at(SEPARATE_BUILD);
    for group in [wrappers, stock] {
        build_plugins(&workspace, &target_dir, "wasm32-wasip2", group);
    }
    ensure_target("wasm32-unknown-unknown");
    build_plugins(&workspace, &target_dir, "wasm32-unknown-unknown", &[("e2ee-web", "medianode-e2ee-web")]);
    let web = out_dir.join("web");
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(target_dir.join("wasm32-unknown-unknown/plugin/medianode_e2ee_web.wasm"))
        .web(true)
        .and_then(|b| b.typescript(false).omit_default_module_path(false).generate(&web))
        .expect("wasm-bindgen on the browser's E2EE module");
    let (js, wasm) = (web.join("medianode_e2ee_web.js"), web.join("medianode_e2ee_web_bg.wasm"));
    std::fs::write(
        out_dir.join("web.rs"),
        format!(
            "/// The browser's E2EE module (plugins/e2ee-web): wasm-bindgen's ES module and its wasm.\n\
             pub const E2EE_JS: &[u8] = include_bytes!({:?});\n\
             pub const E2EE_WASM: &[u8] = include_bytes!({:?});\n",
            js.display().to_string(),
            wasm.display().to_string()
        ),
    )
    .unwrap();

    let mut rows = String::new();
    for (name, krate) in PLUGINS {
        let wasm = target_dir.join("wasm32-wasip2/plugin").join(format!("{}.wasm", krate.replace('-', "_")));
        assert!(wasm.exists(), "expected {} after the plugin build", wasm.display());
        let path = wasm.display().to_string();
        rows.push_str(&format!("    ({name:?}, {path:?}, include_bytes!({path:?})),\n"));
    }
    std::fs::write(
        out_dir.join("stock.rs"),
        format!(
            "/// (name, path of the built `.wasm`, its bytes) of every stock plugin.\n\
             pub const STOCK: &[(&str, &str, &[u8])] = &[\n{rows}];\n"
        ),
    )
    .unwrap();
}

/// One nested `cargo build` of `plugins` for `target`.
fn build_plugins(workspace: &std::path::Path, target_dir: &std::path::Path, target: &str, plugins: &[(&str, &str)]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--target", target, "--profile", "plugin"])
        .arg("--target-dir")
        .arg(target_dir)
        // The outer build's flags are for the host, not for wasm.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        // simd128 makes DSP and crypto loops 3-5x faster in wasm.
        .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-C target-feature=+simd128")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", "-C target-feature=+simd128");
    for (_, krate) in plugins {
        cmd.args(["-p", krate]);
    }
    let status = cmd.status().expect("failed to run cargo for the stock plugins");
    if !status.success() {
        panic!(
            "building the plugins for {target} failed (see above). If the error is about a missing \
             target, run: rustup target add {target}"
        );
    }
}

/// Installs `target`'s standard library with rustup when it is missing, so
/// that a fresh clone builds with plain `cargo build`.
fn ensure_target(target: &str) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.ok().is_some_and(|out| {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PathBuf::from(root).join("lib/rustlib").join(target).exists()
    });
    if !installed {
        println!("cargo:warning=installing the {target} target with rustup (needed to build plugins)");
        let _ = Command::new("rustup").args(["target", "add", target]).status();
    }
}
