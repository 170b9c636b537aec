//! `medianode run`: the node as a daemon, from a pipeline file to its exit
//! status. The binary's `main` parses the command line and calls [`run`];
//! tests run a node in a child process the same way.
//!
//! A node stops on Ctrl-C or SIGTERM (within one tick's work of a
//! pipeline, whatever its plugins do), when its sources end, or when a
//! stage with the `stop` policy gives up (exit status 1).

use crate::config::PipelineConfig;
use crate::pipeline::{BuildError, Pipeline};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::supervisor::crash_report::CrashReporter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where a running node keeps its files.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Crash reports.
    pub crash_dir: PathBuf,
    /// Compiled plugins; `None`: compile on every start.
    pub cache_dir: Option<PathBuf>,
}

/// Runs the pipeline in `file` (the built-in SFU without one) until it
/// ends or the node is told to stop.
pub fn run(file: Option<&Path>, options: &RunOptions) -> ExitCode {
    let config = match file {
        Some(path) => crate::config::load(path),
        None => crate::config::default_pipeline(),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => return fail_config(&e),
    };
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
        if config.sources.is_empty() {
            return tokio::select! {
                _ = shutdown_signal() => ExitCode::SUCCESS,
                stopped = served_stop => match stopped {
                    Some(stopped) => fail(&stopped.to_string()),
                    None => ExitCode::SUCCESS,
                },
            };
        }
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Option<crate::supervisor::Stopped>>();
        let shutdown = async {
            tokio::select! {
                _ = shutdown_signal() => {}
                stopped = served_stop => { let _ = stop_tx.send(stopped); }
            }
        };
        let ran = pipeline.run(shutdown).await;
        let served = stop_rx.await.ok().flatten();
        match (ran, served) {
            (Err(stopped), _) | (Ok(_), Some(stopped)) => {
                drop(runtime);
                fail(&stopped.to_string())
            }
            (Ok(_), None) => ExitCode::SUCCESS,
        }
    });
    reporter.flush();
    result
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
