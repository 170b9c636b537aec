//! From the text to a checked [`PipelineConfig`], collecting every error.
//!
//! The file is parsed once into a spanned document; then each table (each
//! `[[source]]`, `[[stage]]`, ...) is read on its own, so that a typo in one
//! does not hide the errors in another. Each kind's module checks its own
//! settings; this one checks what spans kinds: the `[pipeline]` table,
//! unique ids, links and cycles. A rule that fails reports an error and
//! checking goes on with a default in its place.

use super::schema::{RawAdmin, RawClient, RawCluster, RawPipeline, RawServer, RawSink, RawSource, RawStage};
use super::*;
use serde::de::DeserializeOwned;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

/// The checking context: the file, and the errors found so far.
pub(super) struct Cx {
    pub file: Arc<SourceFile>,
    errors: RefCell<Vec<ConfigError>>,
}

impl Cx {
    pub fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, at.span(), message, hint)
    }

    pub fn err_at(&self, span: Span, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, span, message, hint)
    }

    /// Records an error; checking goes on.
    pub fn report(&self, e: ConfigError) {
        self.errors.borrow_mut().push(e);
    }

    /// Errors so far: a table whose checks added none is usable.
    pub fn error_count(&self) -> usize {
        self.errors.borrow().len()
    }

    /// The value, or `None` after recording the error.
    pub fn ok<T>(&self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.report(e)).ok()
    }

    pub fn duration(&self, value: &Spanned<String>) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            self.err(
                value,
                format!("bad duration `{}`: {e}", value.get_ref()),
                "write a number and a unit, like \"5ms\", \"250us\" or \"10s\"",
            )
        })
    }

    pub fn size(&self, value: &Spanned<String>) -> Result<u64, ConfigError> {
        value.get_ref().parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|e| {
            self.err(
                value,
                format!("bad size `{}`: {e}", value.get_ref()),
                "write a number and a unit, like \"64MiB\", \"512KiB\" or \"1200B\"",
            )
        })
    }

    /// A duration within `range`, or `None` after reporting why not.
    pub fn duration_in(&self, value: &Spanned<String>, range: RangeInclusive<Duration>, message: &str, hint: &str) -> Option<Duration> {
        let d = self.ok(self.duration(value))?;
        self.in_range(value, d, &range, message, hint)
    }

    /// A size within `range`, or `None` after reporting why not.
    pub fn size_in(&self, value: &Spanned<String>, range: RangeInclusive<u64>, message: &str, hint: &str) -> Option<u64> {
        let bytes = self.ok(self.size(value))?;
        self.in_range(value, bytes, &range, message, hint)
    }

    fn in_range<T: PartialOrd, V>(&self, at: &Spanned<V>, x: T, range: &RangeInclusive<T>, message: &str, hint: &str) -> Option<T> {
        if range.contains(&x) {
            return Some(x);
        }
        self.report(self.err(at, message, hint));
        None
    }

    /// Reports a key that belongs to another kind of table; `owner` is e.g.
    /// "tone sources".
    pub fn not_for<T>(&self, owner: &str, key: &str, value: &Option<Spanned<T>>) {
        if let Some(v) = value {
            self.report(self.err(v, format!("`{key}` is not a setting of {owner}"), format!("remove `{key}`, or change `kind`")));
        }
    }

    /// A table's `inputs`: at least one.
    pub fn inputs(&self, owner: &str, inputs: &Spanned<Vec<Spanned<String>>>) -> Vec<Input> {
        if inputs.get_ref().is_empty() {
            self.report(self.err(
                inputs,
                format!("`{owner}` has no inputs"),
                "list at least one source or stage id, e.g. inputs = [\"tone\"]",
            ));
        }
        inputs.get_ref().iter().map(|i| Input { from: i.get_ref().clone(), span: i.span() }).collect()
    }
}

/// The file's tables, each read on its own (`None`/absent where it failed).
#[derive(Default)]
struct RawFile {
    pipeline: Option<RawPipeline>,
    server: Option<Spanned<RawServer>>,
    client: Option<Spanned<RawClient>>,
    cluster: Option<Spanned<RawCluster>>,
    admin: Option<Spanned<RawAdmin>>,
    sources: Vec<Spanned<RawSource>>,
    stages: Vec<Spanned<RawStage>>,
    sinks: Vec<Spanned<RawSink>>,
    /// Ids of tables that failed to read: links to them are not errors of
    /// their own.
    broken: HashSet<String>,
}

pub(super) fn check(file: Arc<SourceFile>) -> Result<(PipelineConfig, Vec<ConfigError>), ConfigErrors> {
    let cx = Cx { file: file.clone(), errors: RefCell::new(Vec::new()) };
    let raw = read(&cx)?;

    let pipeline = raw.pipeline.as_ref();
    let name = pipeline.and_then(|p| p.name.as_ref()).map_or("pipeline".to_string(), |n| n.get_ref().clone());
    let pace = match pipeline.and_then(|p| p.pace.as_ref()) {
        None => Pace::Realtime,
        Some(p) => match p.get_ref().as_str() {
            "realtime" => Pace::Realtime,
            "asap" => Pace::Asap,
            other => {
                cx.report(cx.err(p, format!("unknown pace `{other}`"), "use \"realtime\" or \"asap\""));
                Pace::Realtime
            }
        },
    };
    let tick = pipeline.and_then(|p| p.tick.as_ref()).and_then(|t| {
        cx.duration_in(t, Duration::from_micros(1)..=Duration::from_secs(1), "tick must be between 1us and 1s", "audio uses \"10ms\"")
    });
    let tick = tick.unwrap_or(Duration::from_millis(10));
    let budget = pipeline.and_then(|p| p.budget.as_ref()).and_then(|b| {
        let hint = "leave it out to use the tick, or write e.g. \"20ms\"";
        cx.duration_in(b, Duration::from_micros(1)..=Duration::from_secs(60), "budget must be between 1us and 60s", hint)
    });

    let server = raw.server.as_ref().and_then(|s| server::check(&cx, s));
    let client = raw.client.as_ref().and_then(|c| client::check(&cx, c));
    let cluster = raw.cluster.as_ref().and_then(|c| cluster::check(&cx, c, server.as_ref()));
    if let (None, Some(c)) = (&raw.server, &raw.cluster) {
        cx.report(cx.err(c, "a cluster is made of server nodes", "add a [server] table, or leave [cluster] out"));
    }
    let admin = raw.admin.as_ref().map_or_else(AdminConfig::default, |a| admin::check(&cx, a));
    if let (Some(_), Some(c)) = (&raw.server, &raw.client) {
        cx.report(cx.err(c, "a node is either a server or a client", "run the SFU and each edge node from files of their own"));
    }
    let networked = raw.server.is_some() || raw.client.is_some();
    if !networked && raw.sources.is_empty() && raw.broken.is_empty() {
        cx.report(cx.err_at(
            0..0,
            "the pipeline has no sources",
            "add a [[source]] table, e.g. kind = \"tone\" (or a [server] table to run the SFU)",
        ));
    }
    if !networked && raw.sinks.is_empty() && raw.broken.is_empty() {
        cx.report(cx.err_at(0..0, "the pipeline has no sinks", "add a [[sink]] table, e.g. kind = \"meter\""));
    }

    check_ids(&cx, &raw);
    let sources: Vec<_> = raw.sources.iter().filter_map(|s| source::check(&cx, s)).collect();
    let stages: Vec<_> = raw.stages.iter().filter_map(|s| stage::check(&cx, s, networked)).collect();
    let sinks: Vec<_> = raw.sinks.iter().filter_map(|s| sink::check(&cx, s)).collect();

    // The room's media exists only on an edge node.
    if raw.client.is_none() {
        let roomy = sources.iter().filter_map(|s| match s.kind {
            SourceKind::Subscribe { .. } => Some((s.span.clone(), "subscribe source")),
            SourceKind::Room { .. } => Some((s.span.clone(), "room source")),
            _ => None,
        });
        let roomy = roomy.chain(sinks.iter().filter(|s| s.kind == SinkKind::Publish).map(|s| (s.span.clone(), "publish sink")));
        for (span, what) in roomy {
            cx.report(cx.err_at(span, format!("a {what} needs a [client]"), "add a [client] table naming the SFU node, room and user"));
        }
    }

    check_links(&cx, &raw, &sources, &stages, &sinks);
    check_cycles(&cx, &stages);

    // By default a tick's work may take the tick: then a stage that is
    // slow costs only the chains through it, and every other chain keeps
    // the tick's timing.
    let budget = budget.unwrap_or(tick);
    Ok((PipelineConfig { file, name, pace, tick, budget, sources, stages, sinks, server, client, cluster, admin }, cx.errors.into_inner()))
}

/// Parses the document and reads each table on its own. A syntax error
/// ends checking (what follows it cannot be trusted); a table that does not
/// match its schema is reported and left out.
fn read(cx: &Cx) -> Result<RawFile, ConfigErrors> {
    let text = cx.file.text.as_str();
    let (root, syntax) = DeTable::parse_recoverable(text);
    if let Some(errors) = ConfigErrors::new(syntax.iter().map(|e| toml_error(&cx.file, e)).collect()) {
        return Err(errors);
    }
    let mut raw = RawFile::default();
    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "pipeline" => raw.pipeline = table(cx, value),
            "server" => raw.server = table(cx, value),
            "client" => raw.client = table(cx, value),
            "cluster" => raw.cluster = table(cx, value),
            "admin" => raw.admin = table(cx, value),
            "source" => raw.sources = tables(cx, key, value, &mut raw.broken),
            "stage" => raw.stages = tables(cx, key, value, &mut raw.broken),
            "sink" => raw.sinks = tables(cx, key, value, &mut raw.broken),
            other => cx.report(cx.err_at(
                key.span(),
                format!("unknown table `{other}`"),
                "a pipeline file has [pipeline], [server], [client], [cluster], [admin], [[source]], [[stage]] and [[sink]]",
            )),
        }
    }
    Ok(raw)
}

/// Reads one table; reports it when it does not match its schema.
fn table<T: DeserializeOwned>(cx: &Cx, value: &Spanned<DeValue<'_>>) -> Option<T> {
    let span = value.span();
    cx.ok(T::deserialize(ValueDeserializer::from(value.clone())).map_err(|e| {
        let mut e = toml_error(&cx.file, &e);
        if e.line == 0 {
            e = ConfigError::at(&cx.file, span, e.message, e.hint);
        }
        e
    }))
}

/// Reads an array of tables (`[[source]]`), each on its own.
fn tables<T: DeserializeOwned>(
    cx: &Cx,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
    broken: &mut HashSet<String>,
) -> Vec<T> {
    let Some(array) = value.get_ref().as_array() else {
        let name = key.get_ref();
        cx.report(cx.err_at(key.span(), format!("`{name}` must be an array of tables"), format!("write each one as [[{name}]]")));
        return Vec::new();
    };
    let mut out = Vec::with_capacity(array.len());
    for item in array.iter() {
        match table(cx, item) {
            Some(t) => out.push(t),
            None => {
                if let Some(id) = item.get_ref().get("id").and_then(|id| id.get_ref().as_str()) {
                    broken.insert(id.to_string());
                }
            }
        }
    }
    out
}

/// Ids are well formed, and unique across sources, stages and sinks.
fn check_ids(cx: &Cx, raw: &RawFile) {
    let mut ids: HashMap<&str, &Spanned<String>> = HashMap::new();
    let all_ids = raw
        .sources
        .iter()
        .map(|s| &s.get_ref().id)
        .chain(raw.stages.iter().map(|s| &s.get_ref().id))
        .chain(raw.sinks.iter().map(|s| &s.get_ref().id));
    for id in all_ids {
        let name = id.get_ref();
        let well_formed = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !well_formed {
            cx.report(cx.err(id, format!("bad id `{name}`"), "ids use lowercase letters, digits, `-` and `_`"));
        }
        if let Some(first) = ids.insert(name, id) {
            let (line, _) = cx.file.line_column(first.span().start);
            cx.report(cx.err(id, format!("duplicate id `{name}`"), format!("ids must be unique; `{name}` is already used on line {line}")));
        }
    }
}

/// Every input names a source or a stage; sinks feed nothing.
fn check_links(cx: &Cx, raw: &RawFile, sources: &[SourceConfig], stages: &[StageConfig], sinks: &[SinkConfig]) {
    // Producers as written, whether or not their own settings checked out,
    // so that one bad table is one error.
    let producers: HashSet<&str> = raw
        .sources
        .iter()
        .map(|s| s.get_ref().id.get_ref().as_str())
        .chain(raw.stages.iter().map(|s| s.get_ref().id.get_ref().as_str()))
        .chain(raw.broken.iter().map(String::as_str))
        .collect();
    for (id, inputs) in stages.iter().map(|s| (&s.id, &s.inputs)).chain(sinks.iter().map(|s| (&s.id, &s.inputs))) {
        for input in inputs {
            if input.from == *id {
                cx.report(cx.err_at(
                    input.span.clone(),
                    format!("`{id}` lists itself as an input"),
                    "a node cannot feed itself; name a source or another stage",
                ));
            } else if !producers.contains(input.from.as_str()) {
                let hint = if raw.sinks.iter().any(|s| *s.get_ref().id.get_ref() == input.from) {
                    format!("`{}` is a sink, and sinks produce nothing; name a source or a stage", input.from)
                } else {
                    let mut known: Vec<&str> = sources.iter().map(|s| s.id.as_str()).chain(stages.iter().map(|s| s.id.as_str())).collect();
                    known.sort_unstable();
                    format!("inputs name sources or stages; known ids: {}", known.join(", "))
                };
                cx.report(cx.err_at(input.span.clone(), format!("unknown input `{}`", input.from), hint));
            }
        }
    }
}

/// Rejects cycles among stages (sources have no inputs and sinks no
/// outputs, so only stages can form one). Depth-first search; each error
/// points at the link that closes a cycle.
fn check_cycles(cx: &Cx, stages: &[StageConfig]) {
    let index: HashMap<&str, usize> = stages.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    struct Search<'a> {
        stages: &'a [StageConfig],
        index: HashMap<&'a str, usize>,
        marks: Vec<Mark>,
        path: Vec<usize>,
    }
    impl Search<'_> {
        fn visit(&mut self, i: usize, cx: &Cx) {
            self.marks[i] = Mark::Open;
            self.path.push(i);
            for input in &self.stages[i].inputs {
                let Some(&j) = self.index.get(input.from.as_str()) else { continue };
                match self.marks[j] {
                    Mark::Open => {
                        // `path` runs from j to i, each stage reading the next.
                        let start = self.path.iter().position(|&k| k == j).unwrap_or(0);
                        let mut cycle: Vec<&str> = self.path[start..].iter().map(|&k| self.stages[k].id.as_str()).collect();
                        cycle.push(&self.stages[j].id);
                        cx.report(cx.err_at(
                            input.span.clone(),
                            format!("cycle: {}", cycle.join(" <- ")),
                            "pipelines are acyclic; remove one of these inputs",
                        ));
                    }
                    Mark::New => self.visit(j, cx),
                    Mark::Done => {}
                }
            }
            self.path.pop();
            self.marks[i] = Mark::Done;
        }
    }
    let mut search = Search { stages, index, marks: vec![Mark::New; stages.len()], path: Vec::new() };
    for i in 0..stages.len() {
        if search.marks[i] == Mark::New {
            search.visit(i, cx);
        }
    }
}

/// Turns a TOML parse or schema error into a located error with a hint.
fn toml_error(file: &Arc<SourceFile>, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let hint = if message.contains("unknown field") {
        "check the spelling; the message lists the keys allowed here"
    } else if message.contains("missing field") {
        "add the missing key"
    } else if message.contains("invalid type") {
        "check the value's type: quote strings, and write sizes and durations as strings like \"64MiB\" or \"5ms\""
    } else if message.contains("duplicate key") {
        "each key may appear once per table"
    } else {
        "check the TOML syntax near this position"
    };
    match e.span() {
        Some(span) => ConfigError::at(file, span, message, hint),
        None => ConfigError::whole(&file.path, message, hint),
    }
}
