//! The `medianode` command line (`src/main.rs` calls [`main`]; the tests
//! call it too, as the tutorial's `medianode`).
//!
//! - `medianode run [FILE]` runs a pipeline until Ctrl-C or SIGTERM, or
//!   until its sources end. Without FILE: the SFU with its web page on
//!   http://127.0.0.1:8080 (`pipelines/sfu.toml`).
//!   SIGHUP (or `POST /reload` on the admin API, or `--watch`) reloads the
//!   stages whose plugin or settings changed, without dropping anyone.
//! - `medianode check FILE` validates a pipeline without running it: the
//!   file, what it names, its plugins and link types, and each plugin's
//!   `init` with its config; every error at once, and nothing bound or
//!   opened.
//! - `medianode graph FILE` prints the pipeline as Graphviz DOT.
//! - `medianode plugin new NAME --kind dsp|forward|signaling|e2ee` writes a
//!   plugin crate; `medianode plugin build [DIR]` builds it into a
//!   component; `medianode plugin inspect FILE` says what a plugin file is
//!   and whether this node can run it.

use crate::authoring;
use crate::check::CheckError;
use crate::daemon::{self, RunOptions, fail_config};
use crate::pipeline::to_dot;
use crate::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "medianode", version, about = "A media node whose pipeline stages are sandboxed wasm plugins")]
struct Cli {
    /// Log as human-readable text or as JSON lines.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline (without FILE: the built-in SFU and its web page).
    Run {
        file: Option<PathBuf>,
        #[command(flatten)]
        dirs: Dirs,
        /// The admin API's address (metrics, health, stages), or `off`
        /// [default: the file's `[admin] listen`, else 127.0.0.1:9090].
        #[arg(long, value_name = "ADDR|off", value_parser = admin_address)]
        admin: Option<AdminListen>,
        /// Reload when the pipeline file or one of its plugin files changes
        /// (for plugin authors; SIGHUP and `POST /reload` always reload).
        #[arg(long)]
        watch: bool,
    },
    /// Check a pipeline file without running it (every error at once; no
    /// socket, device or output file is opened).
    Check {
        file: PathBuf,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Print a pipeline's graph as Graphviz DOT.
    Graph { file: PathBuf },
    /// List the audio devices that `kind = "device"` sources and sinks can name.
    Devices,
    /// Write, build and inspect plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a new plugin crate: a working stage with unit tests, a
    /// pipeline that runs it, and a README.
    New {
        /// The plugin's name (lowercase letters, digits, hyphens).
        name: String,
        #[arg(long, value_enum, default_value = "dsp")]
        kind: authoring::Kind,
        /// Where to write it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A local medianode-sdk checkout to depend on [default: the one
        /// this node was built from, else crates.io].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build the plugin crate in DIR into a component (cargo build
    /// --release --target wasm32-wasip2), then inspect it.
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Say what a plugin file is: size, digest, kind, exports, imports, and
    /// whether this node can run it.
    Inspect { file: PathBuf },
}

#[derive(clap::Args)]
struct Dirs {
    /// Where crash reports are written [default: $XDG_STATE_HOME/medianode/crash-reports].
    #[arg(long)]
    crash_dir: Option<PathBuf>,
    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/medianode].
    #[arg(long, conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile plugins on every start instead of caching them.
    #[arg(long)]
    no_cache: bool,
}

/// Runs the command line `args` (the first one is the program's name).
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are "errors" that exit 0.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Run { file, dirs, admin, watch } => {
            let options = RunOptions {
                crash_dir: dirs.crash_dir.clone().unwrap_or_else(|| state_dir().join("crash-reports")),
                cache_dir: dirs.cache(),
                admin: admin.map(|a| a.0),
                watch,
            };
            daemon::run(file.as_deref(), &options)
        }
        Command::Check { file, dirs } => check(file, dirs),
        Command::Graph { file } => match crate::config::load(&file) {
            Ok(config) => {
                print!("{}", to_dot(&config));
                ExitCode::SUCCESS
            }
            Err(e) => fail_config(&e),
        },
        Command::Devices => {
            print!("{}", crate::io::device::describe());
            ExitCode::SUCCESS
        }
        Command::Plugin(command) => plugin(command),
    }
}

fn plugin(command: PluginCommand) -> ExitCode {
    let inspect = |file: &std::path::Path| {
        let runtime = match daemon::runtime(None) {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        match authoring::inspect(&runtime, file) {
            Ok(found) => {
                print!("{}", found.report);
                if found.runs_here { ExitCode::SUCCESS } else { ExitCode::FAILURE }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    };
    match command {
        PluginCommand::New { name, kind, dir, sdk } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk.map_or_else(authoring::Sdk::this_nodes, authoring::Sdk::Path);
            match authoring::new_plugin(&dir, &name, kind, &sdk) {
                Ok(files) => {
                    println!("wrote {} files in {}:", files.len(), dir.display());
                    for file in files {
                        println!("  {}", file.display());
                    }
                    println!("next: cd {} && cargo test && medianode plugin build && medianode run pipeline.toml", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        PluginCommand::Build { dir } => match authoring::build(&dir) {
            Ok(wasm) => {
                println!("built {}", wasm.display());
                inspect(&wasm)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        PluginCommand::Inspect { file } => inspect(&file),
    }
}

/// `--admin`'s value: an address, or no listener.
#[derive(Clone, Copy)]
struct AdminListen(Option<std::net::SocketAddr>);

fn admin_address(text: &str) -> Result<AdminListen, String> {
    match text {
        "off" => Ok(AdminListen(None)),
        _ => text
            .parse()
            .map(|a| AdminListen(Some(a)))
            .map_err(|_| format!("`{text}` is not an address with a port (e.g. 127.0.0.1:9090) or `off`")),
    }
}

fn check(file: PathBuf, dirs: Dirs) -> ExitCode {
    let runtime = match daemon::runtime(dirs.cache()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match crate::check::check_file(&runtime, &file) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(CheckError::Config(errors)) => fail_config(&errors),
    }
}

impl Dirs {
    /// Where compiled plugins are cached, if they are.
    fn cache(&self) -> Option<PathBuf> {
        if self.no_cache { None } else { Some(self.cache_dir.clone().unwrap_or_else(cache_dir)) }
    }
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(fallback)))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("medianode")
}

fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state")
}

fn cache_dir() -> PathBuf {
    xdg("XDG_CACHE_HOME", ".cache")
}
