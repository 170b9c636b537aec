//! The pipeline graph as Graphviz DOT, for `medianode graph`.

use crate::config::PipelineConfig;
use std::fmt::Write;

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
