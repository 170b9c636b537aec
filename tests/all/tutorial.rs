//! The plugin tutorial (`docs/plugins.md`, "A plugin in ten minutes"),
//! executed: every `$` line of its `console` blocks runs, in order, with
//! `sh`, in an empty directory outside the workspace, and each line shown
//! under it must be in what it printed. A command whose shown output starts
//! with `error:` must fail; every other must succeed. Then the WAV file the
//! tutorial's pipeline wrote is checked: 2 s of the tone, its level
//! swinging as the tremolo's settings say.
//!
//! `medianode` on the tutorial's PATH is a shim that runs the node's
//! command line (`medianode::cli::main`, what the binary runs) in a child
//! of this test binary, [`medianode_cli`]: a test cannot build the binary
//! itself, since the cargo running it holds the target directory's lock.
//! The plugin crate's `target` is a link to `target/tutorial` in the
//! workspace, so that its dependencies are built once, not on every run,
//! and it starts from the workspace's Cargo.lock so that it resolves to
//! crates already downloaded.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Where the shim passes the command line: arguments joined by 0x1f.
const ARGS_VAR: &str = "MEDIANODE_CLI_ARGS";

/// The child: `medianode` with the arguments in `$MEDIANODE_CLI_ARGS`.
#[test]
#[ignore = "the tutorial's `medianode`: runs the command line in $MEDIANODE_CLI_ARGS"]
fn medianode_cli() -> ExitCode {
    let Ok(joined) = std::env::var(ARGS_VAR) else { return ExitCode::SUCCESS };
    let args = std::iter::once("medianode".into()).chain(joined.split('\u{1f}').filter(|a| !a.is_empty()).map(Into::into));
    let code = medianode::cli::main(args);
    // Exit here, with the command's status, rather than through the test
    // harness (which would print its summary after the command's output).
    std::process::exit(if code == ExitCode::SUCCESS { 0 } else { 1 })
}

/// One `$` line of the tutorial and the lines shown under it.
struct Step {
    command: String,
    shows: Vec<String>,
}

/// The steps of the "A plugin in ten minutes" section.
fn steps(doc: &str) -> Vec<Step> {
    let section = doc.split("## A plugin in ten minutes").nth(1).expect("the tutorial section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut steps: Vec<Step> = Vec::new();
    let mut in_console = false;
    for line in section.lines() {
        match line.trim_end() {
            "```console" => in_console = true,
            "```" => in_console = false,
            line if in_console => match line.strip_prefix("$ ") {
                Some(command) => steps.push(Step { command: command.to_string(), shows: Vec::new() }),
                None => steps.last_mut().expect("output before a command").shows.push(line.trim().to_string()),
            },
            _ => {}
        }
    }
    steps
}

/// An empty directory outside the workspace with `medianode` on its PATH.
struct Sandbox {
    home: tempfile::TempDir,
    path: String,
    workspace: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
        let home = tempfile::tempdir().expect("tempdir");
        assert!(!home.path().starts_with(&workspace), "the tutorial must run outside the workspace");
        let bin = home.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let shim = bin.join("medianode");
        let me = std::env::current_exe().expect("test binary");
        let script = format!(
            "#!/bin/sh\nexport {ARGS_VAR}=\"$(printf '%s\\037' \"$@\")\"\nexec '{}' tutorial::medianode_cli --exact --ignored --nocapture --test-threads=1 -q\n",
            me.display()
        );
        std::fs::write(&shim, script).expect("shim");
        set_executable(&shim);
        std::fs::create_dir(home.path().join("work")).expect("work dir");
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Sandbox { home, path, workspace }
    }

    fn work(&self) -> PathBuf {
        self.home.path().join("work")
    }

    /// Prepares a new plugin crate in `dir`: its `target` is the shared
    /// `target/tutorial`, and it starts from the workspace's Cargo.lock.
    fn adopt(&self, dir: &Path) {
        let shared = self.workspace.join("target/tutorial");
        std::fs::create_dir_all(&shared).expect("target/tutorial");
        std::os::unix::fs::symlink(&shared, dir.join("target")).expect("target link");
        std::fs::copy(self.workspace.join("Cargo.lock"), dir.join("Cargo.lock")).expect("Cargo.lock");
    }

    /// Runs `command` with `sh` in `cwd`: whether it succeeded, and what it
    /// printed (stdout, then stderr).
    fn sh(&self, cwd: &Path, command: &str) -> (bool, String) {
        let output = Command::new("sh")
            .args(["-c", command])
            .current_dir(cwd)
            .env("PATH", &self.path)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            // The outer build's settings are not the tutorial's.
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("sh");
        let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), printed)
    }
}

#[test]
fn the_plugin_tutorial_runs_as_written() {
    // It compiles two builds of a crate: nothing that measures time should run meanwhile.
    let _cores = crate::common::loading_every_core();
    let sandbox = Sandbox::new();
    let doc = std::fs::read_to_string(sandbox.workspace.join("docs/plugins.md")).expect("docs/plugins.md");
    let steps = steps(&doc);
    assert!(steps.len() >= 6, "the tutorial has {} steps", steps.len());
    let mut cwd = sandbox.work();
    for step in &steps {
        if let Some(dir) = step.command.strip_prefix("cd ") {
            cwd = cwd.join(dir);
            if cwd.join("Cargo.toml").exists() && !cwd.join("target").exists() {
                sandbox.adopt(&cwd);
            }
            continue;
        }
        let (succeeded, printed) = sandbox.sh(&cwd, &step.command);
        let should_fail = step.shows.first().is_some_and(|l| l.starts_with("error:"));
        assert_eq!(!succeeded, should_fail, "`{}` {}:\n{printed}", step.command, if succeeded { "succeeded" } else { "failed" });
        for line in &step.shows {
            assert!(printed.contains(line.as_str()), "`{}` did not print {line:?}:\n{printed}", step.command);
        }
    }

    // The pipeline's output: 200 blocks of the 0.5 tone, each block's peak
    // swinging between 0.5 (unity) and 0.25 (depth 0.5) five times a second.
    let wav = cwd.join("out.wav");
    let samples: Vec<f32> = hound::WavReader::open(&wav).expect("out.wav").samples::<f32>().map(|s| s.expect("sample")).collect();
    assert_eq!(samples.len(), 200 * 480);
    let peaks: Vec<f32> = samples.chunks(480).map(|b| b.iter().fold(0f32, |m, s| m.max(s.abs()))).collect();
    let (low, high) = peaks.iter().fold((f32::MAX, 0f32), |(lo, hi), &p| (lo.min(p), hi.max(p)));
    assert!(high > 0.47 && low < 0.28 && low > 0.2, "block peaks from {low} to {high}");
    // Five swings a second: the peak falls below the middle ten times in 2 s.
    let dips = peaks.windows(2).filter(|w| w[0] >= 0.375 && w[1] < 0.375).count();
    assert!((9..=11).contains(&dips), "{dips} dips in 2 s");
}

/// The other kinds `plugin new` makes: each one's unit tests pass, it
/// builds into a component this node can run, and its pipeline checks.
#[test]
fn every_kind_of_new_plugin_tests_builds_and_checks() {
    let _cores = crate::common::loading_every_core();
    let sandbox = Sandbox::new();
    for (kind, kind_is) in [("forward", "packet forwarding"), ("signaling", "signaling"), ("e2ee", "media encryption")] {
        let name = format!("my-{kind}");
        let (made, printed) = sandbox.sh(&sandbox.work(), &format!("medianode plugin new {name} --kind {kind}"));
        assert!(made, "{printed}");
        let dir = sandbox.work().join(&name);
        sandbox.adopt(&dir);
        let (tested, printed) = sandbox.sh(&dir, "cargo test");
        assert!(tested && printed.contains("test result: ok."), "{kind}: cargo test:\n{printed}");
        let (built, printed) = sandbox.sh(&dir, "medianode plugin build");
        assert!(
            built && printed.contains(&format!("a {kind_is} stage")) && printed.contains("runs here: yes"),
            "{kind}: build:\n{printed}"
        );
        let (checked, printed) = sandbox.sh(&dir, "medianode check pipeline.toml");
        assert!(checked && printed.contains("ok: pipeline"), "{kind}: check:\n{printed}");
    }
    // A bad name, and a directory that is not empty, are refused.
    let (made, printed) = sandbox.sh(&sandbox.work(), "medianode plugin new My_Plugin");
    assert!(!made && printed.contains("is not a plugin name"), "{printed}");
    let (made, printed) = sandbox.sh(&sandbox.work(), "medianode plugin new my-e2ee");
    assert!(!made && printed.contains("is not empty"), "{printed}");
    // inspect says when a file is no plugin this node can run.
    std::fs::write(sandbox.work().join("not.wasm"), b"\0asm\x0d\0\x01\0").expect("write");
    let (ran, printed) = sandbox.sh(&sandbox.work(), "medianode plugin inspect not.wasm");
    assert!(!ran && printed.contains("runs here: no"), "{printed}");
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
