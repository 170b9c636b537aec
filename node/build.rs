//! Builds the stock plugins from source and embeds them in the node.
//!
//! Runs a nested `cargo build --target wasm32-wasip2` over the plugin crates
//! (the way wasmtime's `test-programs/artifacts` does) with its own target
//! directory, then writes `stock.rs` into `OUT_DIR`: one `(name, path, bytes)` row
//! per plugin, the bytes embedded with `include_bytes!`. Nothing
//! prebuilt is committed; a fresh clone needs only
//! `rustup target add wasm32-wasip2`.

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

    ensure_wasm_target();
    let (wrappers, stock) = PLUGINS.split_at(SEPARATE_BUILD);
    for group in [wrappers, stock] {
        build_plugins(&workspace, &target_dir, group);
    }

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

/// One nested `cargo build` of `plugins` for wasm32-wasip2.
fn build_plugins(workspace: &std::path::Path, target_dir: &std::path::Path, plugins: &[(&str, &str)]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--target", "wasm32-wasip2", "--profile", "plugin"])
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
        .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-C target-feature=+simd128");
    for (_, krate) in plugins {
        cmd.args(["-p", krate]);
    }
    let status = cmd.status().expect("failed to run cargo for the stock plugins");
    if !status.success() {
        panic!(
            "building the stock plugins failed (see above). If the error is about a missing \
             target, run: rustup target add wasm32-wasip2"
        );
    }
}

/// Installs the wasm32-wasip2 standard library with rustup when it is
/// missing, so that a fresh clone builds with plain `cargo build`.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.ok().is_some_and(|out| {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_string();
        PathBuf::from(root).join("lib/rustlib/wasm32-wasip2").exists()
    });
    if !installed {
        println!("cargo:warning=installing the wasm32-wasip2 target with rustup (needed to build plugins)");
        let _ = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
    }
}
