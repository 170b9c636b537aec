//! The node's network side, from a pipeline file's `[server]` table: the
//! signaling server (page + WebSocket) and the SFU, with the stages that
//! serve them (the stages without `inputs`).
//!
//! A signaling plugin serves the rooms; a packet-forwarding plugin makes
//! the SFU's forwarding decisions (without one, the same stock decision
//! runs natively).

use crate::config::{PipelineConfig, Runs, ServerConfig, StageConfig};
use crate::pipeline::{self, BuildError};
use crate::runtime::{Runtime, StageKind};
use crate::sfu::router::{Decide, NativeDecider, PluginDecider};
use crate::sfu::{Sfu, SfuOptions};
use crate::signaling::connections::Connections;
use crate::signaling::server::Server;
use crate::supervisor::Supervisor;
use crate::supervisor::crash_report::CrashReporter;
use std::sync::Arc;
use std::time::Instant;

/// The running server and SFU.
pub struct Running {
    pub server: Server,
    pub sfu: Sfu,
}

/// Starts the server described by `config.server` (there must be one).
pub async fn start(runtime: &Runtime, config: &PipelineConfig, reporter: &CrashReporter) -> Result<Running, BuildError> {
    let Some(server_config) = &config.server else {
        return Err(config.error(0..0, "the pipeline has no [server] table", "add one (see pipelines/sfu.toml)").into());
    };
    let mut signaling = None;
    let mut forwarding = None;
    for stage in config.stages.iter().filter(|s| s.serves()) {
        let (kind, supervisor) = supervise(runtime, config, stage, reporter)?;
        let slot = match kind {
            StageKind::Signaling => &mut signaling,
            StageKind::PacketForwarding => &mut forwarding,
            other => {
                let message = format!("`{}` has no inputs, but {} stages need them", stage.id, other.name());
                return Err(config.error(stage.span.clone(), message, "list its inputs, e.g. inputs = [\"tone\"]").into());
            }
        };
        if slot.is_some() {
            let message = format!("a second {} stage `{}`", kind.name(), stage.id);
            return Err(config
                .error(stage.span.clone(), message, "the server takes one signaling and at most one packet-forwarding stage")
                .into());
        }
        *slot = Some(supervisor);
    }
    let Some(signaling) = signaling else {
        let hint = "add a stage without inputs running plugin = \"stock:signaling\"";
        return Err(config.error(server_config.span.clone(), "the [server] has no signaling stage", hint).into());
    };
    let decide: Box<dyn Decide> = match forwarding {
        Some(stage) => Box::new(PluginDecider::new(stage)),
        None => Box::new(NativeDecider::default()),
    };
    let ServerConfig { listen, media_ip, options, .. } = server_config.clone();
    let connections = Connections::default();
    let sfu = Sfu::start(SfuOptions::new(media_ip), connections.clone(), decide);
    let server = Server::start(listen, options, signaling, connections, Some(Arc::new(sfu.clone())), Some(Box::new(sfu.clone())))
        .await
        .map_err(|e| config.error(server_config.span.clone(), format!("cannot listen on {listen}: {e}"), "pick a free port in `listen`"))?;
    tracing::info!("serving the web client on http://{} (media on {media_ip})", server.addr);
    Ok(Running { server, sfu })
}

fn supervise(
    runtime: &Runtime,
    config: &PipelineConfig,
    stage: &StageConfig,
    reporter: &CrashReporter,
) -> Result<(StageKind, Supervisor), BuildError> {
    let Runs::Plugin(plugin_ref) = &stage.runs else {
        let hint = "built-in stages take inputs; the server's stages are signaling and forwarding plugins";
        return Err(config.error(stage.span.clone(), format!("`{}` has no inputs", stage.id), hint).into());
    };
    let plugin = pipeline::load_plugin(runtime, config, stage, plugin_ref)?;
    let kind = plugin.kind;
    Ok((kind, pipeline::supervise(stage, plugin, reporter, Instant::now())?))
}
