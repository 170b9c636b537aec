//! `medianode plugin new | build | inspect`: the plugin author's commands.
//!
//! - [`new_plugin`] writes a standalone crate (outside any workspace): a
//!   Cargo.toml with the crate type, release profile and SDK dependency a
//!   plugin needs, a working stage of the chosen kind with a config struct
//!   and native unit tests, a pipeline that runs it, and a README. The
//!   templates are in `templates/`, one `.rs` and one `.toml` per kind.
//! - [`build`] runs `cargo build --release --target wasm32-wasip2` there
//!   (with SIMD on, as the stock plugins are built) and returns the
//!   component's path, read from cargo's JSON messages.
//! - [`inspect`] says what a file is: size, digest, the stage kind and
//!   world, the interfaces it exports and imports, and whether this node
//!   can run it (by compiling and linking it, as `run` would).

use crate::runtime::{Runtime, StageKind};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The kinds of stage `plugin new` can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Audio DSP: a tremolo, run on a test tone into a WAV file.
    Dsp,
    /// SFU packet forwarding: to the others in the publisher's room.
    Forward,
    /// Signaling: join, leave and relay chat, with error replies.
    Signaling,
    /// Media encryption for an edge node (a static key, as a start).
    E2ee,
}

impl Kind {
    /// (lib.rs, pipeline.toml, what the README says it is)
    fn templates(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Kind::Dsp => (include_str!("templates/dsp.rs"), include_str!("templates/dsp.toml"), "an audio DSP stage (a tremolo)"),
            Kind::Forward => (
                include_str!("templates/forward.rs"),
                include_str!("templates/forward.toml"),
                "an SFU forwarding stage (each packet to the others in its room)",
            ),
            Kind::Signaling => (
                include_str!("templates/signaling.rs"),
                include_str!("templates/signaling.toml"),
                "a signaling stage (join, leave, relayed messages)",
            ),
            Kind::E2ee => (
                include_str!("templates/e2ee.rs"),
                include_str!("templates/e2ee.toml"),
                "a media encryption stage for an edge node (one static key: a start, not MLS)",
            ),
        }
    }
}

/// Where the scaffold's `medianode-sdk` comes from.
pub enum Sdk {
    /// A local checkout of the SDK crate.
    Path(PathBuf),
    /// crates.io, this version requirement.
    Registry(&'static str),
}

impl Sdk {
    /// The SDK this node was built from, if its source is still there;
    /// else crates.io.
    pub fn this_nodes() -> Sdk {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk");
        match source.canonicalize() {
            Ok(path) if path.join("Cargo.toml").exists() => Sdk::Path(path),
            _ => Sdk::Registry(env!("CARGO_PKG_VERSION")),
        }
    }

    fn dependency(&self) -> String {
        match self {
            Sdk::Path(path) => format!("medianode-sdk = {{ path = {:?} }}", path.display().to_string()),
            Sdk::Registry(version) => format!("medianode-sdk = \"{version}\""),
        }
    }
}

/// Writes a new plugin crate named `name` of `kind` into `dir` (which must
/// not exist or be empty); returns the files written.
pub fn new_plugin(dir: &Path, name: &str, kind: Kind, sdk: &Sdk) -> Result<Vec<PathBuf>, String> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        return Err(format!(
            "`{name}` is not a plugin name: use lowercase letters, digits and hyphens, starting with a letter (e.g. my-tremolo)"
        ));
    }
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!("{} exists and is not empty: choose another name or --dir", dir.display()));
    }
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
        })
        .collect();
    let (lib, pipeline, what) = kind.templates();
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", name)
            .replace("{{crate_file}}", &name.replace('-', "_"))
            .replace("{{Type}}", &type_name)
            .replace("{{sdk}}", &sdk.dependency())
            .replace("{{what}}", what)
    };
    let files = [
        ("Cargo.toml", fill(include_str!("templates/Cargo.toml.in"))),
        ("src/lib.rs", fill(lib)),
        ("pipeline.toml", fill(pipeline)),
        ("README.md", fill(include_str!("templates/README.md.in"))),
        (".gitignore", fill(include_str!("templates/gitignore.in"))),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Builds the plugin crate in `dir` into a component; returns its path.
/// Cargo's own output (progress, diagnostics) goes to stderr.
pub fn build(dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .env("CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS", "-C target-feature=+simd128")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err("cargo build failed (see above); if it says the target is missing: rustup target add wasm32-wasip2".into());
    }
    // The last `.wasm` cargo reports is the crate's own component.
    let artifact = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| message["reason"] == "compiler-artifact")
        .flat_map(|message| message["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|file| file.as_str().map(PathBuf::from))
        .rfind(|file| file.extension().is_some_and(|e| e == "wasm"));
    artifact.ok_or_else(|| "cargo built no .wasm: is the crate type [\"cdylib\", \"rlib\"]?".to_string())
}

/// What `inspect` found: the report, and whether this node can run it.
pub struct Inspection {
    pub report: String,
    pub runs_here: bool,
}

/// Describes the plugin file at `path` (a component or a native library).
pub fn inspect(runtime: &Runtime, path: &Path) -> Result<Inspection, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut report = String::new();
    let _ = writeln!(report, "file:      {}", path.display());
    let _ = writeln!(report, "size:      {} bytes", bytes.len());
    let _ = writeln!(report, "sha256:    {}", crate::runtime::hex(&Sha256::digest(&bytes)));
    if !bytes.starts_with(b"\0asm") {
        let native = crate::config::is_native_library(&bytes);
        let _ = writeln!(
            report,
            "runs here: {}",
            if native {
                "only as a native plugin, with trust = \"native\" on its stage (unsandboxed; inspect does not load native code)"
            } else {
                "no: it is neither a wasm component nor a native library"
            }
        );
        return Ok(Inspection { report, runs_here: native });
    }
    let source = path.display().to_string();
    match runtime.interfaces(&bytes) {
        Ok((exports, imports)) => {
            let _ = writeln!(report, "exports:   {}", if exports.is_empty() { "(nothing)".to_string() } else { exports.join(", ") });
            let _ =
                writeln!(report, "imports:   {}", if imports.is_empty() { "(nothing)".to_string() } else { imports.join("\n           ") });
        }
        Err(e) => {
            let _ = writeln!(report, "runs here: no: {e:#}");
            return Ok(Inspection { report, runs_here: false });
        }
    }
    let stack = medianode_core::supervision::Limits::default().stack;
    let runs_here = match runtime.load(&source, &bytes, stack) {
        Ok(plugin) => {
            let world = StageKind::ALL.iter().find(|(k, _)| *k == plugin.kind).map_or("?", |(_, export)| export);
            let _ =
                writeln!(report, "kind:      {} (world medianode:plugin/{}, exports {world})", kind_text(plugin.kind), plugin.kind.name());
            let _ = writeln!(report, "runs here: yes");
            true
        }
        Err(e) => {
            let _ = writeln!(report, "runs here: no: {e:#}");
            false
        }
    };
    Ok(Inspection { report, runs_here })
}

fn kind_text(kind: StageKind) -> &'static str {
    match kind {
        StageKind::AudioDsp => "an audio DSP stage",
        StageKind::FrameTransform => "a frame transform stage",
        StageKind::PacketForwarding => "a packet forwarding stage",
        StageKind::Signaling => "a signaling stage",
        StageKind::Encryption => "a media encryption stage",
    }
}
