//! The node's network side, from a pipeline file's `[server]` table: the
//! signaling server (page + WebSocket) and the SFU, with the stages that
//! serve them (the stages without `inputs`).
//!
//! A signaling plugin serves the rooms; a packet-forwarding plugin makes
//! the SFU's forwarding decisions (without one, the same stock decision
//! runs natively).

use crate::cluster::Cluster;
use crate::config::{PipelineConfig, ServerConfig};
use crate::pipeline::{self, BuildError};
use crate::runtime::Runtime;
use crate::runtime::StageShared;
use crate::sfu::router::{Decide, NativeDecider, PluginDecider};
use crate::sfu::{Sfu, SfuOptions};
use crate::signaling::connections::Connections;
use crate::signaling::hub::SeatSink;
use crate::signaling::server::{MediaSink, Server};
use crate::supervisor::crash_report::CrashReporter;
use std::sync::Arc;
use std::time::Instant;

/// The running server and SFU.
pub struct Running {
    pub server: Server,
    pub sfu: Sfu,
    /// Its membership of a cluster (`[cluster]`), when it is in one.
    pub cluster: Option<Arc<Cluster>>,
    /// The stages serving it (signaling, and forwarding if there is one).
    pub stages: Vec<Arc<StageShared>>,
}

/// Starts the server described by `config.server` (there must be one).
pub async fn start(runtime: &Runtime, config: &PipelineConfig, reporter: &CrashReporter) -> Result<Running, BuildError> {
    let Some(server_config) = &config.server else {
        return Err(config.error(0..0, "the pipeline has no [server] table", "add one (see pipelines/sfu.toml)").into());
    };
    let compiled = pipeline::compile(runtime, config)?;
    let now = Instant::now();
    let serving = |index: Option<usize>| index.map(|i| compiled.supervise(config, i, reporter, now)).transpose();
    let forwarding = serving(compiled.plan.forwarding)?;
    let Some(signaling) = serving(compiled.plan.signaling)? else {
        let hint = "add a stage without inputs running plugin = \"stock:signaling\"";
        return Err(config.error(server_config.span.clone(), "the [server] has no signaling stage", hint).into());
    };
    let stages = [Some(&signaling), forwarding.as_ref()].into_iter().flatten().map(|s| s.shared().clone()).collect();
    let decide: Box<dyn Decide> = match forwarding {
        Some(stage) => Box::new(PluginDecider::new(stage)),
        None => Box::new(NativeDecider::default()),
    };
    let ServerConfig { listen, media_ip, media_port, media_threads, options, .. } = server_config.clone();
    let connections = Connections::default();
    let sfu_options = SfuOptions { media_port, media_threads, ..SfuOptions::new(media_ip) };
    let sfu = Sfu::start(sfu_options, connections.clone(), decide).map_err(|e| {
        config.error(server_config.span.clone(), e, "check `media-ip` (an address of this machine) and `media-port` (free, or 0)")
    })?;
    let cannot_listen = |e: std::io::Error| {
        config.error(server_config.span.clone(), format!("cannot listen on {listen}: {e}"), "pick a free port in `listen`")
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(cannot_listen)?;
    let cluster = match &config.cluster {
        None => None,
        Some(cluster) => {
            let addr = listener.local_addr().map_err(cannot_listen)?;
            let url = cluster.url.clone().unwrap_or_else(|| format!("ws://{addr}/ws"));
            let joined = Cluster::join(cluster, url, sfu.media_address()).await;
            let hint = "start redis-server, or check `redis`; each node needs a `node` name of its own";
            let cluster = joined.map_err(|e| config.error(cluster.span.clone(), format!("cannot join the cluster: {e}"), hint))?;
            crate::cluster::relay::start(cluster.clone(), &sfu);
            Some(cluster)
        }
    };
    let (media, seats) = (Some(Arc::new(sfu.clone()) as Arc<dyn MediaSink>), Some(Arc::new(sfu.clone()) as Arc<dyn SeatSink>));
    let placement = cluster.clone().map(|c| c as Arc<dyn crate::signaling::placement::Placement>);
    let server = Server::serve(listener, options, signaling, connections, media, seats, placement).map_err(cannot_listen)?;
    tracing::info!("serving the web client on http://{} (media on udp {})", server.addr, sfu.media_address());
    Ok(Running { server, sfu, cluster, stages })
}
