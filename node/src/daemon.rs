//! `medianode run`: the node as a daemon, from a pipeline file to its exit
//! status. The binary's `main` parses the command line and calls [`run`];
//! tests run a node in a child process the same way.
//!
//! A node stops on Ctrl-C, SIGTERM or `POST /drain` (within one tick's
//! work of a pipeline, whatever its plugins do), when its sources end, or
//! when a stage with the `stop` policy gives up (exit status 1). Stopping,
//! it drains: the signaling port closes, every WebSocket is closed as
//! "going away" (1001) so clients reconnect, peer connections close, all
//! within `[admin] grace` (10 s; at once when nobody is connected).
//! Under systemd it says `READY=1`, `STOPPING=1` and pings the watchdog
//! ([`crate::admin::systemd`]).

use crate::admin::NodeView;
use crate::admin::systemd::Systemd;
use crate::config::PipelineConfig;
use crate::pipeline::{BuildError, Pipeline};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::supervisor::crash_report::CrashReporter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where a running node keeps its files, and what the command line
/// overrides.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Crash reports.
    pub crash_dir: PathBuf,
    /// Compiled plugins; `None`: compile on every start.
    pub cache_dir: Option<PathBuf>,
    /// `--admin`: the admin listener's address (`Some(None)`: off),
    /// instead of the file's `[admin] listen`.
    pub admin: Option<Option<std::net::SocketAddr>>,
    /// `--watch`: reload when the pipeline file or a plugin file changes.
    pub watch: bool,
}

/// Runs the pipeline in `file` (the built-in SFU without one) until it
/// ends or the node is told to stop.
pub fn run(file: Option<&Path>, options: &RunOptions) -> ExitCode {
    limit_malloc_arenas();
    let config = match file {
        Some(path) => crate::config::load(path),
        None => crate::config::default_pipeline(),
    };
    let mut config = match config {
        Ok(config) => config,
        Err(e) => return fail_config(&e),
    };
    if let Some(listen) = options.admin {
        config.admin.listen = listen;
        config.admin.listen_given = true;
    }
    // The SFU's peer connections each run a driver task: give them threads.
    let tokio = match config.server.is_some() || config.client.is_some() {
        true => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        false => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    };
    let tokio = match tokio {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    tracing::info!("crash reports go to {}", options.crash_dir.display());
    let reporter = CrashReporter::new(Some(options.crash_dir.clone()));
    let result = tokio.block_on(async {
        let runtime = match runtime(options.cache_dir.clone()) {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        // An edge node joins its room first: the pipeline's publish and
        // subscribe ends come from its media.
        let (edge, ports) = match &config.client {
            None => (None, None),
            Some(_) => match crate::edge::start(&runtime, &config, &reporter) {
                Ok((edge, ports)) => (Some(edge), Some(ports)),
                Err(BuildError::Config(e)) => return fail_config(&e),
                Err(e) => return fail(&e.to_string()),
            },
        };
        let pipeline = match pipeline(&runtime, &config, &reporter, ports) {
            Ok(pipeline) => pipeline,
            Err(code) => return code,
        };
        let mut serving = match &config.server {
            None => None,
            Some(_) => match crate::server::start(&runtime, &config, &reporter).await {
                Ok(running) => Some(running),
                Err(BuildError::Config(e)) => return fail_config(&e),
                Err(e) => return fail(&e.to_string()),
            },
        };
        let view = NodeView::default();
        view.add_stages(pipeline.stats().stages);
        view.set_mix(pipeline.stats().mix);
        if let Some(running) = &serving {
            view.add_server(running);
        }
        if let Some(shared) = edge.as_ref().and_then(|e| e.stage_shared()) {
            view.add_stages([shared.clone()]);
        }
        let _monitor = AbortOnDrop(crate::admin::monitor::spawn(config.admin.monitor.clone(), view.clone()));
        let _admin = match admin(&config.admin, view.clone()).await {
            Ok(admin) => admin,
            Err(code) => return code,
        };
        // Listeners bound, stages serving: tell systemd.
        let systemd = Systemd::from_env();
        let _reloads = file.map(|path| {
            let reloader = crate::reload::Reloader::new(path.to_path_buf(), runtime.clone(), &config, view.clone());
            crate::reload::serve(reloader, &view, systemd.clone(), options.watch).into_iter().map(AbortOnDrop).collect::<Vec<_>>()
        });
        systemd.ready();
        let _watchdog = systemd.watchdog().map(AbortOnDrop);
        let stop_asked = async {
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = view.drain_requested() => {}
            }
        };
        // A stage serving the [server] or [client] that gives up under
        // `stop` stops the node, like a pipeline stage does.
        let served_stop = async {
            match (serving.as_mut(), edge.as_ref()) {
                (Some(running), _) => tokio::select! {
                    stopped = running.server.stopped() => stopped,
                    stopped = running.sfu.stopped() => Some(stopped),
                },
                (None, Some(edge)) => Some(edge.stopped().await),
                (None, None) => std::future::pending().await,
            }
        };
        let stopped = if config.sources.is_empty() {
            tokio::select! {
                _ = stop_asked => None,
                stopped = served_stop => stopped,
            }
        } else {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Option<crate::supervisor::Stopped>>();
            let shutdown = async {
                tokio::select! {
                    _ = stop_asked => {}
                    stopped = served_stop => { let _ = stop_tx.send(stopped); }
                }
            };
            let ran = pipeline.run(shutdown).await;
            let served = stop_rx.await.ok().flatten();
            ran.err().or(served)
        };
        // Drain: connections are told to go (and where to), peer
        // connections closed, within the grace period.
        systemd.stopping();
        if let Some(running) = serving.as_mut() {
            tracing::info!("draining (grace {:?})", config.admin.grace);
            running.server.drain(config.admin.grace).await;
            running.sfu.close_all().await;
        }
        match stopped {
            Some(stopped) => {
                drop(runtime);
                fail(&stopped.to_string())
            }
            None => ExitCode::SUCCESS,
        }
    });
    reporter.flush();
    result
}

/// glibc gives each thread that allocates an arena of its own (up to 8 per
/// core), and a node's threads come and go (peer connections, stage
/// builders); each arena keeps what it once held. Measured by the churn
/// benchmark over 150 s of rooms coming and going: resident memory grew
/// 9.7% with the default, 0.4% with one arena, 0.6% with two. Two keep
/// allocation from contending on one lock and memory from creeping. Set
/// before the node's threads start.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it touches no
    // memory of ours.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Ends a task when the node's run ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the admin listener, if there is one. A listener the file asked
/// for must bind; the default one only warns when its port is taken (a
/// second node on the machine).
async fn admin(config: &crate::config::AdminConfig, view: NodeView) -> Result<Option<crate::admin::Admin>, ExitCode> {
    let Some(listen) = config.listen else { return Ok(None) };
    if !listen.ip().is_loopback() && config.token_value.is_none() {
        let hint = "set [admin] token-env or token-file, or listen on 127.0.0.1";
        return Err(fail(&format!("the admin API on {listen} would be reachable beyond this machine without a token; {hint}")));
    }
    match crate::admin::start(listen, config.token_value.as_deref(), view).await {
        Ok(admin) => Ok(Some(admin)),
        Err(e) if !config.listen_given => {
            tracing::warn!("admin API not started: cannot listen on {listen}: {e} (set [admin] listen, or --admin ADDR)");
            Ok(None)
        }
        Err(e) => Err(fail(&format!("cannot listen on {listen} for the admin API: {e}; pick a free port in [admin] listen"))),
    }
}

/// The node's wasm runtime, caching compiled plugins in `cache_dir`.
pub fn runtime(cache_dir: Option<PathBuf>) -> Result<Runtime, ExitCode> {
    Runtime::new(RuntimeOptions { cache_dir }).map_err(|e| fail(&format!("{e:#}")))
}

/// Builds the pipeline, saying what is wrong if it cannot.
pub fn pipeline(
    runtime: &Runtime,
    config: &PipelineConfig,
    reporter: &CrashReporter,
    ports: Option<crate::pipeline::Ports>,
) -> Result<Pipeline, ExitCode> {
    match Pipeline::build_with(runtime, config, reporter, ports) {
        Ok(pipeline) => Ok(pipeline),
        Err(BuildError::Config(e)) => Err(fail_config(&e)),
        Err(e) => Err(fail(&e.to_string())),
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!("SIGTERM will not stop the node gracefully: {e}");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

/// Prints located config errors; exit status 2.
pub fn fail_config(e: &crate::config::ConfigErrors) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(2)
}

/// Prints an error; exit status 1.
pub fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
