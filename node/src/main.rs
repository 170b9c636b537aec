//! The `medianode` command line.
//!
//! - `medianode run [FILE]` runs a pipeline until Ctrl-C or SIGTERM, or
//!   until its sources end. Without FILE: the SFU with its web page on
//!   http://127.0.0.1:8080 (`pipelines/sfu.toml`).
//! - `medianode check FILE` validates a pipeline: the file, its plugins, their
//!   link types and their `init` with the given config.
//! - `medianode graph FILE` prints the pipeline as Graphviz DOT.

use clap::{Parser, Subcommand};
use medianode::config::PipelineConfig;
use medianode::daemon::{self, RunOptions, fail, fail_config, pipeline};
use medianode::pipeline::{BuildError, Pipeline, to_dot};
use medianode::runtime::Runtime;
use medianode::supervisor::crash_report::CrashReporter;
use medianode::telemetry::{self, LogFormat};
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
    /// Run a pipeline (the built-in demo when FILE is omitted).
    Run {
        file: Option<PathBuf>,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Check a pipeline file without running it.
    Check {
        file: PathBuf,
        #[command(flatten)]
        dirs: Dirs,
    },
    /// Print a pipeline's graph as Graphviz DOT.
    Graph { file: PathBuf },
    /// List the audio devices that `kind = "device"` sources and sinks can name.
    Devices,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Run { file, dirs } => {
            let options = RunOptions {
                crash_dir: dirs.crash_dir.clone().unwrap_or_else(|| state_dir().join("crash-reports")),
                cache_dir: dirs.cache(),
            };
            daemon::run(file.as_deref(), &options)
        }
        Command::Check { file, dirs } => check(file, dirs),
        Command::Graph { file } => match PipelineConfig::load(&file) {
            Ok(config) => {
                print!("{}", to_dot(&config));
                ExitCode::SUCCESS
            }
            Err(e) => fail_config(&e),
        },
        Command::Devices => {
            print!("{}", medianode::io::device::describe());
            ExitCode::SUCCESS
        }
    }
}

fn check(file: PathBuf, dirs: Dirs) -> ExitCode {
    let mut config = match PipelineConfig::load(&file) {
        Ok(config) => config,
        Err(e) => return fail_config(&e),
    };
    match build(&config, &dirs, &CrashReporter::new(None)) {
        Ok((runtime, pipeline)) => {
            if let Some(server) = config.server.as_mut() {
                // Starting the server checks its stages; it listens on a
                // spare port so that a running node does not fail the check.
                let (listen, media_ip) = (server.listen, server.media_ip);
                server.listen.set_port(0);
                let tokio = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
                };
                match tokio.block_on(medianode::server::start(&runtime, &config, &CrashReporter::new(None))) {
                    Ok(_) => println!("ok: server on {listen} (media on {media_ip})"),
                    Err(BuildError::Config(e)) => return fail_config(&e),
                    Err(e) => return fail(&e.to_string()),
                }
            }
            println!(
                "ok: pipeline `{}`: {} sources, {} stages ({} serving the server or client), {} sinks; run order: {}",
                config.name,
                config.sources.len(),
                config.stages.len(),
                config.stages.iter().filter(|s| s.serves()).count(),
                config.sinks.len(),
                match pipeline.order() {
                    order if order.is_empty() => "(nothing to run)".to_string(),
                    order => order.join(" -> "),
                }
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn build(config: &PipelineConfig, dirs: &Dirs, reporter: &CrashReporter) -> Result<(Runtime, Pipeline), ExitCode> {
    let runtime = runtime(dirs)?;
    // `check` has no edge media: the pipeline's ends of it go nowhere.
    let ports = config.client.as_ref().map(|_| {
        let (publish, _) = tokio::sync::mpsc::channel(1);
        medianode::edge::Ports { publish, subscribe: Some(tokio::sync::mpsc::channel(1).1) }
    });
    let pipeline = pipeline(&runtime, config, reporter, ports)?;
    Ok((runtime, pipeline))
}

fn runtime(dirs: &Dirs) -> Result<Runtime, ExitCode> {
    daemon::runtime(dirs.cache())
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
