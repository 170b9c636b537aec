//! The pipeline as a graph: its link types, its order, and its picture.
//!
//! Which type of item a stage takes and makes depends on its plugin's kind,
//! which the host learns by compiling the plugin. Given those kinds,
//! [`plan`] checks the whole graph at once: every link joins matching
//! types, the stages without inputs serve the `[server]` or `[client]` that
//! needs them, and no kind is in a place it cannot serve. [`to_dot`] draws
//! the graph for `medianode graph`.

use super::{ConfigError, ConfigErrors, Input, PipelineConfig, Runs, SinkKind};
use crate::plugin::StageKind;
use crate::supervision::FailurePolicy;
use std::collections::HashMap;
use std::fmt::Write;

/// The type of items on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortType {
    Audio,
    Frames,
}

impl PortType {
    fn describe(self) -> &'static str {
        match self {
            PortType::Audio => "audio blocks",
            PortType::Frames => "frames",
        }
    }

    fn of(audio: bool) -> PortType {
        if audio { PortType::Audio } else { PortType::Frames }
    }
}

/// A checked graph, with indices into the config's lists.
#[derive(Debug, Default)]
pub struct Plan {
    /// The stages with inputs, each after the stages it reads.
    pub order: Vec<usize>,
    /// What each source and stage with inputs makes, by id.
    pub makes: HashMap<String, PortType>,
    /// The `[server]`'s signaling stage and its forwarding stage, if any.
    pub signaling: Option<usize>,
    pub forwarding: Option<usize>,
    /// The `[client]`'s E2EE stage, if any.
    pub encryption: Option<usize>,
}

/// Checks the graph, given the kind of each plugin stage (by id). A stage
/// missing from `kinds` (its plugin did not load, an error of its own) is
/// left out of the checks that need its kind.
pub fn plan(config: &PipelineConfig, kinds: &HashMap<&str, StageKind>) -> Result<Plan, ConfigErrors> {
    let mut errors = Vec::new();
    let mut plan = Plan::default();
    for source in &config.sources {
        plan.makes.insert(source.id.clone(), PortType::of(source.kind.is_audio()));
    }

    // Stages in dependency order (the file's check ruled out cycles); for
    // each, what it takes and makes, if known.
    let mut pending: Vec<usize> = (0..config.stages.len()).filter(|&i| !config.stages[i].serves()).collect();
    let mut placed: HashMap<&str, ()> = config.sources.iter().map(|s| (s.id.as_str(), ())).collect();
    while !pending.is_empty() {
        let ready = pending.iter().position(|&i| config.stages[i].inputs.iter().all(|input| placed.contains_key(input.from.as_str())));
        let Some(ready) = ready else {
            let stage = &config.stages[pending[0]];
            errors.push(config.error(stage.span.clone(), "stage inputs cannot be ordered", "remove the cycle among these stages"));
            break;
        };
        let i = pending.remove(ready);
        let stage = &config.stages[i];
        placed.insert(&stage.id, ());
        plan.order.push(i);
        let ports = match &stage.runs {
            Runs::Builtin(builtin) => {
                let (takes, makes) = builtin.ports();
                Some((PortType::of(takes), PortType::of(makes), builtin.name()))
            }
            Runs::Plugin(plugin) => match kinds.get(stage.id.as_str()) {
                None => None,
                Some(StageKind::AudioDsp) => Some((PortType::Audio, PortType::Audio, StageKind::AudioDsp.name())),
                Some(StageKind::FrameTransform) => Some((PortType::Frames, PortType::Frames, StageKind::FrameTransform.name())),
                Some(other) => {
                    let serves = if *other == StageKind::Encryption { "[client]" } else { "[server]" };
                    let message = format!("{} plugins serve the {serves}, not a pipeline of sources and sinks", other.name());
                    let hint = format!("remove this stage's `inputs` and add a {serves} table");
                    errors.push(config.error(plugin.span.clone(), message, hint));
                    None
                }
            },
        };
        if let Some((takes, makes, what)) = ports {
            link_types(config, &plan.makes, &stage.id, &stage.inputs, Some(takes), what, &mut errors);
            plan.makes.insert(stage.id.clone(), makes);
        }
    }

    for sink in &config.sinks {
        let wants = match sink.kind {
            SinkKind::Meter { .. } | SinkKind::Wav { .. } | SinkKind::Device { .. } => Some(PortType::Audio),
            SinkKind::Publish => Some(PortType::Frames),
            SinkKind::Null | SinkKind::Channel { .. } => None,
        };
        link_types(config, &plan.makes, &sink.id, &sink.inputs, wants, "sink", &mut errors);
    }

    serving_stages(config, kinds, &mut plan, &mut errors);
    match ConfigErrors::new(errors) {
        Some(errors) => Err(errors),
        None => Ok(plan),
    }
}

/// Checks the types on a node's inputs: each what the node takes (`wants`,
/// when it cares), and all of one type.
fn link_types(
    config: &PipelineConfig,
    makes: &HashMap<String, PortType>,
    id: &str,
    inputs: &[Input],
    wants: Option<PortType>,
    what: &str,
    errors: &mut Vec<ConfigError>,
) {
    let mut seen: Option<(PortType, &str)> = None;
    for input in inputs {
        let Some(&ty) = makes.get(&input.from) else { continue };
        if let Some(want) = wants
            && ty != want
        {
            errors.push(config.error(
                input.span.clone(),
                format!("type mismatch: `{}` produces {}, but `{id}` ({what}) takes {}", input.from, ty.describe(), want.describe()),
                "link nodes whose port types match: audio into audio stages, frames into frame stages",
            ));
            continue;
        }
        if let Some((first, first_id)) = seen
            && first != ty
        {
            errors.push(config.error(
                input.span.clone(),
                format!("type mismatch: `{}` produces {}, but `{first_id}` produces {}", input.from, ty.describe(), first.describe()),
                "all inputs of one node carry the same type",
            ));
            continue;
        }
        seen = Some((ty, input.from.as_str()));
    }
}

/// The stages without inputs: one signaling and at most one forwarding
/// stage for a `[server]`, at most one E2EE stage for a `[client]`.
fn serving_stages(config: &PipelineConfig, kinds: &HashMap<&str, StageKind>, plan: &mut Plan, errors: &mut Vec<ConfigError>) {
    for (i, stage) in config.stages.iter().enumerate().filter(|(_, s)| s.serves()) {
        let Some(&kind) = kinds.get(stage.id.as_str()) else { continue };
        let slot = match (kind, &config.server, &config.client) {
            (StageKind::Signaling, Some(_), _) => &mut plan.signaling,
            (StageKind::PacketForwarding, Some(_), _) => &mut plan.forwarding,
            (StageKind::Encryption, _, Some(_)) => &mut plan.encryption,
            (other, Some(_), _) => {
                let message = format!("`{}` has no inputs, but {} stages need them", stage.id, other.name());
                errors.push(config.error(stage.span.clone(), message, "list its inputs, e.g. inputs = [\"tone\"]"));
                continue;
            }
            (other, _, _) => {
                let message = format!("`{}` has no inputs, but it is a {} plugin", stage.id, other.name());
                let hint = "a [client] is served by one E2EE plugin (stock:e2ee); give other stages inputs";
                errors.push(config.error(stage.span.clone(), message, hint));
                continue;
            }
        };
        if slot.is_some() {
            let hint = match kind {
                StageKind::Encryption => "a [client] takes one",
                _ => "the server takes one signaling and at most one packet-forwarding stage",
            };
            errors.push(config.error(stage.span.clone(), format!("a second {} stage `{}`", kind.name(), stage.id), hint));
            continue;
        }
        if kind == StageKind::Encryption && stage.failure == FailurePolicy::FailOpen {
            let message = format!("`{}` is an E2EE stage and cannot fail open", stage.id);
            let hint = "media would leave in the clear; use failure = \"fail-closed\" (frames are dropped while it is down) or \"stop\"";
            errors.push(config.error(stage.span.clone(), message, hint));
        }
        *slot = Some(i);
    }
    let signaling_loaded = config.stages.iter().filter(|s| s.serves()).all(|s| kinds.contains_key(s.id.as_str()));
    if let Some(server) = &config.server
        && plan.signaling.is_none()
        && signaling_loaded
    {
        let hint = "add a stage without inputs running plugin = \"stock:signaling\"";
        errors.push(config.error(server.span.clone(), "the [server] has no signaling stage", hint));
    }
}

/// Renders the checked pipeline as a DOT digraph: sources as ellipses,
/// stages as boxes (labelled with plugin and failure policy), sinks as
/// double octagons.
pub fn to_dot(config: &PipelineConfig) -> String {
    let mut dot = String::new();
    let _ = writeln!(dot, "digraph {:?} {{\n  rankdir=LR;", config.name);
    for s in &config.sources {
        let kind = s.kind.name();
        let _ = writeln!(dot, "  {:?} [shape=ellipse, label=\"{}\\n({kind})\"];", s.id, s.id);
    }
    for s in &config.stages {
        let _ = writeln!(dot, "  {:?} [shape=box, label=\"{}\\n{}\\n{}\"];", s.id, s.id, s.runs_name().replace('"', "'"), s.failure.name());
    }
    for s in &config.sinks {
        let kind = s.kind.name();
        let _ = writeln!(dot, "  {:?} [shape=doubleoctagon, label=\"{}\\n({kind})\"];", s.id, s.id);
    }
    for (id, inputs) in config.stages.iter().map(|s| (&s.id, &s.inputs)).chain(config.sinks.iter().map(|s| (&s.id, &s.inputs))) {
        for input in inputs {
            let _ = writeln!(dot, "  {:?} -> {:?};", input.from, id);
        }
    }
    dot.push_str("}\n");
    dot
}
