//! Builds the native plugins the tests load (`examples/native-gain`,
//! `plugins/native-faulty`) as shared libraries, with a nested
//! `cargo build --profile native-plugin` into a target directory of their
//! own (the outer build holds the lock on its own), and hands their paths
//! to the tests and benches as `MEDIANODE_NATIVE_GAIN` and
//! `MEDIANODE_NATIVE_FAULTY`.

// A build script fails the build by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::env;
use std::path::PathBuf;
use std::process::Command;

const LIBRARIES: &[(&str, &str)] =
    &[("MEDIANODE_NATIVE_GAIN", "medianode-native-gain"), ("MEDIANODE_NATIVE_FAULTY", "medianode-native-faulty")];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let target_dir = workspace.join("target").join("native-plugins");
    for dir in ["examples/native-gain", "plugins/native-faulty", "plugins/sdk", "plugins/dsp", "plugins/faulty"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--profile", "native-plugin", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    for (_, krate) in LIBRARIES {
        cmd.args(["-p", krate]);
    }
    let status = cmd.status().expect("failed to run cargo for the native plugins");
    assert!(status.success(), "building the native plugins failed (see above)");
    for (var, krate) in LIBRARIES {
        let file = format!("{}{}{}", env::consts::DLL_PREFIX, krate.replace('-', "_"), env::consts::DLL_SUFFIX);
        let path = target_dir.join("native-plugin").join(file);
        assert!(path.exists(), "expected {} after the native plugin build", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
