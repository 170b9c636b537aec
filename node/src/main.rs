//! The `medianode` command line.
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

use clap::{Parser, Subcommand};
use medianode::check::CheckError;
use medianode::daemon::{self, RunOptions, fail_config};
use medianode::pipeline::to_dot;
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
        Command::Graph { file } => match medianode::config::load(&file) {
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
    match medianode::check::check_file(&runtime, &file) {
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
