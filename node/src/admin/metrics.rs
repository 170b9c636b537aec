//! `GET /metrics`: the node's counters in the Prometheus/OpenMetrics text
//! format, through `prometheus-client`.
//!
//! Nothing is counted twice: at each scrape a [`Collector`] reads the
//! counters the data path keeps anyway (each stage's atomics, the router's
//! and outboxes' counts, the signaling server's) into metric families.
//! Names follow Prometheus conventions: the `medianode_` prefix, `_total`
//! on counters (added by the encoder), base units (bytes, seconds).
//!
//! Families: `stage_*` (label `stage`; faults also by `kind`, state as one
//! gauge per state), `plugin_value` (a plugin's own counters and gauges,
//! labels `stage` and `name`, within the series budget of
//! [`crate::runtime::MAX_METRIC_SERIES`]), `sfu_*`, `signaling_*`,
//! `edge_*` (an edge node's room mix: label `publisher` on levels),
//! `process_*` and `tokio_tasks`.

use super::process::{self, ProcessSample};
use super::view::NodeView;
use crate::io::mix::MixStats;
use crate::runtime::{StageShared, StageState};
use crate::sfu::RoomView;
use crate::sfu::router::RouterStats;
use crate::signaling::server::{SignalingCounters, counted_type};
use medianode_core::monitor::Limit;
use medianode_core::supervision::TrapKind;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything one scrape shows, read before encoding (the SFU's rooms are
/// behind an async lock; the encoder is synchronous).
struct Scrape {
    stages: Vec<Arc<StageShared>>,
    sfu: Option<(RouterStats, Vec<RoomView>)>,
    signaling: Option<(usize, Arc<SignalingCounters>)>,
    mix: Option<Arc<MixStats>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    process: ProcessSample,
    alerts: Vec<Limit>,
}

/// The metrics text of `view`, now.
pub async fn render(view: &NodeView) -> String {
    let sfu = match view.sfu() {
        Some(sfu) => Some((sfu.stats(), sfu.rooms().await)),
        None => None,
    };
    let scrape = Scrape {
        stages: view.stages(),
        sfu,
        signaling: view.signaling().map(|(connections, counters)| (connections.len(), counters)),
        mix: view.mix(),
        cluster: view.cluster(),
        process: process::sample_off_async().await,
        alerts: view.alerts().iter().map(|c| c.limit).collect(),
    };
    let mut registry = Registry::with_prefix("medianode");
    registry.register_collector(Box::new(scrape));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &registry) {
        tracing::warn!("cannot encode the metrics: {e}");
    }
    text
}

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrape").field("stages", &self.stages.len()).finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

/// A per-stage counter family: name, help, and how to read it.
type StageCounter = (&'static str, &'static str, fn(&StageShared) -> u64);

/// One family: its values by label set.
fn family<V: EncodeCounterValue + EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    kind: MetricType,
    values: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let mut one = metric.encode_family(&labels)?;
        match kind {
            MetricType::Counter => one.encode_counter::<NoLabelSet, V, f64>(&value, None)?,
            _ => one.encode_gauge(&value)?,
        }
    }
    Ok(())
}

fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

fn stage_label(stage: &StageShared) -> Labels {
    vec![("stage", stage.id.clone())]
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), Error> {
        use MetricType::{Counter, Gauge};
        let stages = &self.stages;
        let per_stage = |f: fn(&StageShared) -> u64| stages.iter().map(move |s| (stage_label(s), f(s)));
        let counters: [StageCounter; 12] = [
            ("stage_calls", "Calls into the stage's plugin.", |s| get(&s.metrics.calls)),
            ("stage_items_in", "Items handed to the stage.", |s| get(&s.metrics.items_in)),
            ("stage_items_out", "Items the stage produced.", |s| get(&s.metrics.items_out)),
            ("stage_restarts", "Instances brought into service after a fault.", |s| get(&s.metrics.restarts)),
            ("stage_quarantined", "Inputs set aside after a fault, never retried.", |s| get(&s.metrics.quarantined)),
            ("stage_dropped", "Items dropped while the stage was down (fail-closed).", |s| get(&s.metrics.dropped)),
            ("stage_bypassed", "Items passed around the stage while it was down (fail-open).", |s| get(&s.metrics.bypassed)),
            ("stage_muted", "Audio blocks replaced by silence.", |s| get(&s.metrics.muted)),
            ("stage_late", "Items whose output missed their tick.", |s| get(&s.metrics.late)),
            ("stage_log_dropped_lines", "Plugin log lines dropped over the stage's log budget.", |s| get(&s.log.counters.dropped_lines)),
            ("stage_log_dropped_bytes", "Plugin log bytes dropped over the stage's log budget.", |s| get(&s.log.counters.dropped_bytes)),
            ("stage_metric_updates_dropped", "Plugin metric updates refused (bad name, or past the series budget).", |s| {
                get(&s.metrics.metrics_dropped)
            }),
        ];
        for (name, help, f) in counters {
            family(&mut e, name, help, Counter, per_stage(f))?;
        }
        let faults = stages.iter().flat_map(|s| {
            TrapKind::ALL
                .iter()
                .map(move |&k| (vec![("stage", s.id.clone()), ("kind", k.name().to_string())], get(&s.metrics.faults_by_kind[k as usize])))
        });
        family(&mut e, "stage_faults", "Faults of the stage's plugin, by kind.", Counter, faults)?;
        let states = stages.iter().flat_map(|s| {
            let now = crate::runtime::lock(&s.status).state;
            StageState::ALL.iter().map(move |&st| (vec![("stage", s.id.clone()), ("state", st.name().to_string())], u64::from(st == now)))
        });
        family(&mut e, "stage_state", "1 for the state the stage is in.", Gauge, states)?;
        let state_bytes = stages.iter().map(|s| (stage_label(s), crate::runtime::lock(&s.state).used()));
        family(&mut e, "stage_state_store_bytes", "Bytes in the stage's state store.", Gauge, state_bytes)?;
        let memory = per_stage(|s| get(&s.metrics.memory_peak));
        family(&mut e, "stage_memory_peak_bytes", "The largest linear memory an instance of the stage has had.", Gauge, memory)?;
        {
            let mut metric =
                e.encode_descriptor("stage_call_seconds", "How long calls into the stage's plugin took.", None, MetricType::Histogram)?;
            for s in stages {
                let (sum, count, buckets) = s.metrics.call_time.snapshot();
                let labels = stage_label(s);
                metric.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        let plugin_values: Vec<(Labels, f64)> = stages
            .iter()
            .flat_map(|s| {
                let values = crate::runtime::lock(&s.metrics.plugin).clone();
                values.into_iter().map(move |(name, v)| (vec![("stage", s.id.clone()), ("name", name)], v))
            })
            .collect();
        family(&mut e, "plugin_value", "A plugin's own counters and gauges, by name.", Gauge, plugin_values)?;

        if let Some((router, rooms)) = &self.sfu {
            let one = |v: u64| [(Labels::new(), v)];
            family(&mut e, "sfu_rooms", "Rooms with a participant.", Gauge, one(rooms.len() as u64))?;
            let participants = rooms.iter().map(|r| r.participants.len()).sum::<usize>();
            family(&mut e, "sfu_participants", "Participants with a seat.", Gauge, one(participants as u64))?;
            let mut by_ice: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
            rooms.iter().flat_map(|r| &r.participants).for_each(|p| *by_ice.entry(p.ice.as_str()).or_default() += 1);
            let by_ice = by_ice.into_iter().map(|(state, n)| (vec![("state", state.to_string())], n));
            family(&mut e, "sfu_peer_connections", "Participants' peer connections, by ICE state.", Gauge, by_ice)?;
            family(&mut e, "sfu_packets_in", "RTP packets from publishers.", Counter, one(router.packets_in))?;
            family(&mut e, "sfu_packets_out", "RTP packets written to subscribers.", Counter, one(router.packets_out))?;
            let drops = [
                (vec![("reason", "send-queue-full".to_string())], router.send_dropped),
                (vec![("reason", "write-error".to_string())], router.write_errors),
            ];
            family(&mut e, "sfu_dropped_packets", "Packets not delivered, by reason.", Counter, drops)?;
            family(&mut e, "sfu_outbound_queue_bytes", "Bytes waiting for the media port's socket.", Gauge, one(router.queued_bytes))?;
            let unclaimed = one(router.unclaimed);
            family(&mut e, "sfu_unclaimed_datagrams", "Datagrams on the media port no connection claimed.", Counter, unclaimed)?;
            let refused = one(router.streams_refused);
            family(&mut e, "sfu_refused_streams", "Streams refused to publishers past the most one may publish.", Counter, refused)?;
            let keyframes = one(router.keyframe_requests);
            family(&mut e, "sfu_keyframe_requests", "Keyframe requests (PLI) sent to publishers.", Counter, keyframes)?;
            let switches = one(router.layer_switches);
            family(&mut e, "sfu_layer_switches", "Times a subscriber moved to another simulcast layer of a stream.", Counter, switches)?;
        }
        if let Some((connections, c)) = &self.signaling {
            family(&mut e, "signaling_connections", "Open signaling WebSockets.", Gauge, [(Labels::new(), *connections as u64)])?;
            family(
                &mut e,
                "signaling_connections_opened",
                "Signaling WebSockets opened.",
                Counter,
                [(Labels::new(), get(&c.connections_opened))],
            )?;
            family(&mut e, "signaling_messages", "Text messages received.", Counter, [(Labels::new(), get(&c.messages))])?;
            let by_type = c.by_type.iter().enumerate().map(|(i, n)| (vec![("type", counted_type(i).to_string())], get(n)));
            family(&mut e, "signaling_messages_handled", "Messages past the size and rate limits, by type.", Counter, by_type)?;
            family(
                &mut e,
                "signaling_media_messages",
                "Media messages (offer, answer, candidate) handed to the SFU.",
                Counter,
                [(Labels::new(), get(&c.media_messages))],
            )?;
            let refused = [("too-big", &c.too_big), ("rate-limited", &c.rate_limited), ("busy", &c.busy), ("binary", &c.binary)]
                .map(|(code, n)| (vec![("code", code.to_string())], get(n)));
            family(&mut e, "signaling_refused", "Messages the host refused, by error code.", Counter, refused)?;
        }
        if let Some(cluster) = &self.cluster {
            let nodes = cluster.nodes().len() as u64;
            family(
                &mut e,
                "cluster_nodes",
                "Nodes of the cluster alive (heartbeats within their TTL), this one included.",
                Gauge,
                [(Labels::new(), nodes)],
            )?;
            let rooms = cluster.hosted_rooms() as u64;
            family(&mut e, "cluster_rooms_hosted", "Rooms this node is the home of.", Gauge, [(Labels::new(), rooms)])?;
            let c = &cluster.counters;
            for (name, help, n) in [
                (
                    "cluster_proxied_connections",
                    "Client connections whose signaling went to their room's home on another node.",
                    &c.proxied,
                ),
                ("cluster_redis_errors", "Redis commands that failed or timed out.", &c.redis_errors),
                ("cluster_rooms_lost", "Times another node held a room this one was the home of.", &c.rooms_lost),
            ] {
                family(&mut e, name, help, Counter, [(Labels::new(), get(n))])?;
            }
        }
        if let Some(mix) = &self.mix {
            let voices = mix.levels();
            family(
                &mut e,
                "edge_mixed_publishers",
                "Publishers in an edge node's room mix.",
                Gauge,
                [(Labels::new(), voices.len() as u64)],
            )?;
            let levels = voices.iter().map(|v| (vec![("publisher", v.publisher.clone())], v.level_dbfs));
            family(&mut e, "edge_publisher_level_dbfs", "Each mixed publisher's level (RMS over a second).", Gauge, levels)?;
            let counts = [
                ("edge_mix_underruns", "Times a publisher's audio ran dry in the mix.", &mix.underruns),
                ("edge_mix_overflow_samples", "Samples dropped from publishers that sent more than the mix holds.", &mix.overflow_samples),
                ("edge_mix_refused_frames", "Frames of publishers past the most the mix takes.", &mix.refused_frames),
                ("edge_mix_limited_blocks", "Mixed blocks the limiter turned down.", &mix.limited_blocks),
            ];
            for (name, help, n) in counts {
                family(&mut e, name, help, Counter, [(Labels::new(), get(n))])?;
            }
        }
        let p = &self.process;
        family(&mut e, "process_resident_memory_bytes", "Resident memory.", Gauge, [(Labels::new(), p.rss_bytes)])?;
        family(&mut e, "process_cpu_seconds", "User and system CPU time.", Counter, [(Labels::new(), p.cpu_seconds)])?;
        family(&mut e, "process_open_fds", "Open file descriptors.", Gauge, [(Labels::new(), p.open_fds)])?;
        family(&mut e, "process_threads", "Threads.", Gauge, [(Labels::new(), p.threads)])?;
        family(&mut e, "tokio_tasks", "Live async tasks.", Gauge, [(Labels::new(), p.tasks)])?;
        let alerts = Limit::ALL.map(|l| (vec![("limit", l.name().to_string())], u64::from(self.alerts.contains(&l))));
        family(&mut e, "monitor_alert", "1 while the system monitor's threshold on `limit` is crossed.", Gauge, alerts)?;
        Ok(())
    }
}
