//! From the raw file to a checked [`PipelineConfig`], one rule at a time.
//!
//! Every rule that fails returns a [`ConfigError`] pointing at the value at
//! fault, with a hint that says what to write instead.

use super::schema::{RawClient, RawFile, RawLimits, RawRestart, RawServer, RawSink, RawSource, RawStage};
use super::*;
use crate::builtin::Builtin;
use crate::io::wav::WavFormat;
use crate::runtime::{MAX_MEMORY, hex, stock};
use crate::signaling::server::ServerOptions;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use toml::Spanned;

const STACK_RANGE: (u64, u64) = (64 << 10, 8 << 20);

pub(super) fn check(file: Arc<SourceFile>) -> Result<PipelineConfig, ConfigError> {
    let raw: RawFile = toml::from_str(&file.text).map_err(|e| toml_error(&file, &e))?;
    let cx = Cx { file: file.clone() };

    let pipeline = raw.pipeline.as_ref();
    let name = pipeline.and_then(|p| p.name.as_ref()).map_or("pipeline".to_string(), |n| n.get_ref().clone());
    let pace = match pipeline.and_then(|p| p.pace.as_ref()) {
        None => Pace::Realtime,
        Some(p) => match p.get_ref().as_str() {
            "realtime" => Pace::Realtime,
            "asap" => Pace::Asap,
            other => return Err(cx.err(p, format!("unknown pace `{other}`"), "use \"realtime\" or \"asap\"")),
        },
    };
    let tick = match pipeline.and_then(|p| p.tick.as_ref()) {
        None => Duration::from_millis(10),
        Some(t) => {
            let d = cx.duration(t)?;
            if d.is_zero() || d > Duration::from_secs(1) {
                return Err(cx.err(t, "tick must be between 1us and 1s", "audio uses \"10ms\""));
            }
            d
        }
    };
    let budget = match pipeline.and_then(|p| p.budget.as_ref()) {
        None => None,
        Some(b) => Some({
            let d = cx.duration(b)?;
            if d.is_zero() || d > Duration::from_secs(60) {
                return Err(cx.err(b, "budget must be between 1us and 60s", "leave it out to use the tick, or write e.g. \"20ms\""));
            }
            d
        }),
    };

    let server = raw.server.as_ref().map(|s| cx.server(s)).transpose()?;
    let client = raw.client.as_ref().map(|c| cx.client(c)).transpose()?;
    if let (Some(_), Some(c)) = (&server, &client) {
        return Err(cx.err_at(
            c.span.clone(),
            "a node is either a server or a client",
            "run the SFU and each edge node from files of their own",
        ));
    }
    let networked = server.is_some() || client.is_some();
    if server.is_none() && raw.source.is_empty() && client.is_none() {
        return Err(cx.err_at(
            0..0,
            "the pipeline has no sources",
            "add a [[source]] table, e.g. kind = \"tone\" (or a [server] table to run the SFU)",
        ));
    }
    if server.is_none() && raw.sink.is_empty() && client.is_none() {
        return Err(cx.err_at(0..0, "the pipeline has no sinks", "add a [[sink]] table, e.g. kind = \"meter\""));
    }

    // Ids are unique across sources, stages and sinks.
    let mut ids: HashMap<&str, &Spanned<String>> = HashMap::new();
    let all_ids = raw
        .source
        .iter()
        .map(|s| &s.get_ref().id)
        .chain(raw.stage.iter().map(|s| &s.get_ref().id))
        .chain(raw.sink.iter().map(|s| &s.get_ref().id));
    for id in all_ids {
        cx.check_id(id)?;
        if let Some(first) = ids.insert(id.get_ref(), id) {
            let (line, _) = file.line_column(first.span().start);
            return Err(cx.err(
                id,
                format!("duplicate id `{}`", id.get_ref()),
                format!("ids must be unique; `{}` is already used on line {line}", id.get_ref()),
            ));
        }
    }

    let sources = raw.source.iter().map(|s| cx.source(s)).collect::<Result<Vec<_>, _>>()?;
    let stages = raw.stage.iter().map(|s| cx.stage(s, networked)).collect::<Result<Vec<_>, _>>()?;
    let sinks = raw.sink.iter().map(|s| cx.sink(s)).collect::<Result<Vec<_>, _>>()?;

    // The room's media exists only on an edge node.
    if client.is_none() {
        let roomy = sources
            .iter()
            .find(|s| matches!(s.kind, SourceKind::Subscribe { .. }))
            .map(|s| (s.span.clone(), "subscribe source"))
            .or_else(|| sinks.iter().find(|s| s.kind == SinkKind::Publish).map(|s| (s.span.clone(), "publish sink")));
        if let Some((span, what)) = roomy {
            return Err(cx.err_at(span, format!("a {what} needs a [client]"), "add a [client] table naming the SFU node, room and user"));
        }
    }

    // Links: every input names a source or a stage; sinks feed nothing.
    let producers: HashMap<&str, ()> =
        sources.iter().map(|s| (s.id.as_str(), ())).chain(stages.iter().map(|s| (s.id.as_str(), ()))).collect();
    let known: Vec<&str> = producers.keys().copied().collect();
    for (id, inputs) in stages.iter().map(|s| (&s.id, &s.inputs)).chain(sinks.iter().map(|s| (&s.id, &s.inputs))) {
        for input in inputs {
            if input.from == *id {
                return Err(cx.err_at(
                    input.span.clone(),
                    format!("`{id}` lists itself as an input"),
                    "a node cannot feed itself; name a source or another stage",
                ));
            }
            if !producers.contains_key(input.from.as_str()) {
                let hint = if sinks.iter().any(|s| s.id == input.from) {
                    format!("`{}` is a sink, and sinks produce nothing; name a source or a stage", input.from)
                } else {
                    let mut known = known.clone();
                    known.sort();
                    format!("inputs name sources or stages; known ids: {}", known.join(", "))
                };
                return Err(cx.err_at(input.span.clone(), format!("unknown input `{}`", input.from), hint));
            }
        }
    }
    check_cycles(&cx, &stages)?;

    // By default a tick's work may take the tick: then a stage that is
    // slow costs only the chains through it, and every other chain keeps
    // the tick's timing.
    let budget = budget.unwrap_or(tick);
    Ok(PipelineConfig { file, name, pace, tick, budget, sources, stages, sinks, server, client })
}

/// Rejects cycles among stages (sources have no inputs and sinks no
/// outputs, so only stages can form one). Depth-first search; the error
/// points at the link that closes the cycle.
fn check_cycles(cx: &Cx, stages: &[StageConfig]) -> Result<(), ConfigError> {
    let index: HashMap<&str, usize> = stages.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut marks = vec![Mark::New; stages.len()];
    let mut path: Vec<usize> = Vec::new();

    fn visit(
        i: usize,
        stages: &[StageConfig],
        index: &HashMap<&str, usize>,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        cx: &Cx,
    ) -> Result<(), ConfigError> {
        marks[i] = Mark::Open;
        path.push(i);
        for input in &stages[i].inputs {
            let Some(&j) = index.get(input.from.as_str()) else { continue };
            match marks[j] {
                Mark::Open => {
                    // `path` runs from j to i, each stage reading the next.
                    let start = path.iter().position(|&k| k == j).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..].iter().map(|&k| stages[k].id.as_str()).collect();
                    cycle.push(&stages[j].id);
                    return Err(cx.err_at(
                        input.span.clone(),
                        format!("cycle: {}", cycle.join(" <- ")),
                        "pipelines are acyclic; remove one of these inputs",
                    ));
                }
                Mark::New => visit(j, stages, index, marks, path, cx)?,
                Mark::Done => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        Ok(())
    }

    for i in 0..stages.len() {
        if marks[i] == Mark::New {
            visit(i, stages, &index, &mut marks, &mut path, cx)?;
        }
    }
    Ok(())
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
    ConfigError::at(file, e.span().unwrap_or(0..0), message, hint)
}

struct Cx {
    file: Arc<SourceFile>,
}

impl Cx {
    fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, at.span(), message, hint)
    }

    fn err_at(&self, span: Span, message: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        ConfigError::at(&self.file, span, message, hint)
    }

    fn check_id(&self, id: &Spanned<String>) -> Result<(), ConfigError> {
        let ok =
            !id.get_ref().is_empty() && id.get_ref().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok { Ok(()) } else { Err(self.err(id, format!("bad id `{}`", id.get_ref()), "ids use lowercase letters, digits, `-` and `_`")) }
    }

    fn duration(&self, value: &Spanned<String>) -> Result<Duration, ConfigError> {
        humantime::parse_duration(value.get_ref()).map_err(|e| {
            self.err(
                value,
                format!("bad duration `{}`: {e}", value.get_ref()),
                "write a number and a unit, like \"5ms\", \"250us\" or \"10s\"",
            )
        })
    }

    fn size(&self, value: &Spanned<String>) -> Result<u64, ConfigError> {
        value.get_ref().parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|e| {
            self.err(
                value,
                format!("bad size `{}`: {e}", value.get_ref()),
                "write a number and a unit, like \"64MiB\", \"512KiB\" or \"1200B\"",
            )
        })
    }

    /// Rejects a key that belongs to another kind of node; `owner` is e.g.
    /// "tone sources".
    fn not_for<T>(&self, owner: &str, key: &str, value: &Option<Spanned<T>>) -> Result<(), ConfigError> {
        match value {
            Some(v) => Err(self.err(v, format!("`{key}` is not a setting of {owner}"), format!("remove `{key}`, or change `kind`"))),
            None => Ok(()),
        }
    }

    fn source(&self, raw: &Spanned<RawSource>) -> Result<SourceConfig, ConfigError> {
        let s = raw.get_ref();
        let kind_name = s.kind.get_ref().as_str();
        let owner = format!("{kind_name} sources");
        // Which keys each kind takes; any other is refused where it stands.
        let takes = |key: &str| -> bool {
            match kind_name {
                "tone" => ["frequency", "amplitude", "channels"].contains(&key),
                "sweep" => ["from", "to", "period", "amplitude", "channels"].contains(&key),
                "wav" => ["path", "channels"].contains(&key),
                "device" => ["device", "channels"].contains(&key),
                "frames" => ["size", "per-tick"].contains(&key),
                "subscribe" => key == "publisher",
                _ => true,
            }
        };
        let keys = [
            ("frequency", s.frequency.as_ref().map(|v| v.span())),
            ("amplitude", s.amplitude.as_ref().map(|v| v.span())),
            ("channels", s.channels.as_ref().map(|v| v.span())),
            ("size", s.size.as_ref().map(|v| v.span())),
            ("per-tick", s.per_tick.as_ref().map(|v| v.span())),
            ("path", s.path.as_ref().map(|v| v.span())),
            ("device", s.device.as_ref().map(|v| v.span())),
            ("from", s.from.as_ref().map(|v| v.span())),
            ("to", s.to.as_ref().map(|v| v.span())),
            ("period", s.period.as_ref().map(|v| v.span())),
            ("publisher", s.publisher.as_ref().map(|v| v.span())),
        ];
        for (key, span) in keys {
            if let Some(span) = span
                && !takes(key)
            {
                return Err(self.err_at(span, format!("`{key}` is not a setting of {owner}"), format!("remove `{key}`, or change `kind`")));
            }
        }
        let amplitude = || -> Result<f64, ConfigError> {
            let a = s.amplitude.as_ref().map_or(0.25, |a| *a.get_ref());
            match &s.amplitude {
                Some(v) if !(0.0..=1.0).contains(&a) => Err(self.err(v, "amplitude out of range", "use 0.0 to 1.0 (full scale)")),
                _ => Ok(a),
            }
        };
        let channels = || -> Result<Option<u8>, ConfigError> {
            match &s.channels {
                Some(c) if !(1..=8).contains(c.get_ref()) => Err(self.err(c, "channels out of range", "use 1 to 8")),
                other => Ok(other.as_ref().map(|c| *c.get_ref())),
            }
        };
        let frequency = |value: &Option<Spanned<f64>>, default: f64| -> Result<f64, ConfigError> {
            match value {
                Some(f) if !(1.0..=24_000.0).contains(f.get_ref()) => {
                    Err(self.err(f, "frequency out of range", "use 1 to 24000 Hz (48 kHz audio)"))
                }
                other => Ok(other.as_ref().map_or(default, |f| *f.get_ref())),
            }
        };
        let kind = match kind_name {
            "tone" => {
                SourceKind::Tone { frequency: frequency(&s.frequency, 440.0)?, amplitude: amplitude()?, channels: channels()?.unwrap_or(1) }
            }
            "sweep" => {
                let period = match &s.period {
                    None => Duration::from_secs(10),
                    Some(v) => {
                        let d = self.duration(v)?;
                        if d < Duration::from_millis(100) {
                            return Err(self.err(v, "sweep period too short", "use 100ms or more, e.g. \"10s\""));
                        }
                        d
                    }
                };
                SourceKind::Sweep {
                    from: frequency(&s.from, 20.0)?,
                    to: frequency(&s.to, 20_000.0)?,
                    period,
                    amplitude: amplitude()?,
                    channels: channels()?.unwrap_or(1),
                }
            }
            "wav" => {
                let Some(path) = &s.path else {
                    return Err(self.err(&s.kind, "a wav source needs `path`", "add path = \"input.wav\" (relative to this file)"));
                };
                let full = self.file.dir().join(path.get_ref());
                crate::io::wav::probe(&full)
                    .map_err(|e| self.err(path, e, "paths are relative to the pipeline file; give a PCM or float WAV file"))?;
                SourceKind::Wav { path: full, path_span: path.span(), channels: channels()? }
            }
            "device" => SourceKind::Device { device: s.device.as_ref().map(|d| d.get_ref().clone()), channels: channels()?.unwrap_or(1) },
            "frames" => {
                let size = match &s.size {
                    None => 1200,
                    Some(v) => {
                        let size = self.size(v)?;
                        if size == 0 || size > 1 << 20 {
                            return Err(self.err(v, "frame size out of range", "use 1B to 1MiB"));
                        }
                        size as usize
                    }
                };
                let per_tick = s.per_tick.as_ref().map_or(1, |p| *p.get_ref());
                if let Some(p) = &s.per_tick
                    && !(1..=10_000).contains(p.get_ref())
                {
                    return Err(self.err(p, "per-tick out of range", "use 1 to 10000 frames per tick"));
                }
                SourceKind::Frames { size, per_tick }
            }
            "subscribe" => match &s.publisher {
                Some(p) if !p.get_ref().is_empty() => SourceKind::Subscribe { publisher: p.get_ref().clone() },
                _ => {
                    return Err(self.err(
                        &s.kind,
                        "a subscribe source needs `publisher`",
                        "name whose audio to take, e.g. publisher = \"alice\"",
                    ));
                }
            },
            other => {
                return Err(self.err(
                    &s.kind,
                    format!("unknown source kind `{other}`"),
                    "source kinds are: tone, sweep, wav, device, frames, subscribe",
                ));
            }
        };
        if let Some(p) = &s.poison_every
            && *p.get_ref() == 0
        {
            return Err(self.err(p, "poison-every = 0 marks nothing", "use 1 or more, or remove it"));
        }
        Ok(SourceConfig {
            id: s.id.get_ref().clone(),
            span: raw.span(),
            kind,
            count: s.count.as_ref().map(|c| *c.get_ref()),
            poison_every: s.poison_every.as_ref().map(|p| *p.get_ref()),
        })
    }

    fn inputs(&self, owner: &str, inputs: &Spanned<Vec<Spanned<String>>>) -> Result<Vec<Input>, ConfigError> {
        if inputs.get_ref().is_empty() {
            return Err(self.err(
                inputs,
                format!("`{owner}` has no inputs"),
                "list at least one source or stage id, e.g. inputs = [\"tone\"]",
            ));
        }
        Ok(inputs.get_ref().iter().map(|i| Input { from: i.get_ref().clone(), span: i.span() }).collect())
    }

    /// A stage's inputs; none (the key absent) for a stage that serves `[server]`.
    fn stage_inputs(&self, owner: &str, raw: &Spanned<RawStage>, has_server: bool) -> Result<Vec<Input>, ConfigError> {
        match &raw.get_ref().inputs {
            Some(inputs) => self.inputs(owner, inputs),
            None if has_server => Ok(Vec::new()),
            None => Err(self.err(
                &raw.get_ref().id,
                format!("`{owner}` has no inputs"),
                "list its inputs, e.g. inputs = [\"tone\"]; only stages serving a [server] (signaling, forwarding) or a [client] (E2EE) go without",
            )),
        }
    }

    fn server(&self, raw: &Spanned<RawServer>) -> Result<ServerConfig, ConfigError> {
        let s = raw.get_ref();
        let mut options = ServerOptions::default();
        let listen: std::net::SocketAddr = match &s.listen {
            None => std::net::SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some(l) => l
                .get_ref()
                .parse()
                .map_err(|_| self.err(l, format!("`{}` is not an address with a port", l.get_ref()), "e.g. listen = \"127.0.0.1:8080\""))?,
        };
        let media_ip = match &s.media_ip {
            None => listen.ip(),
            Some(ip) => ip
                .get_ref()
                .parse()
                .map_err(|_| self.err(ip, format!("`{}` is not an IP address", ip.get_ref()), "e.g. media-ip = \"127.0.0.1\""))?,
        };
        if let Some(size) = &s.max_message {
            let bytes = self.size(size)?;
            if !(256..=16 << 20).contains(&bytes) {
                return Err(self.err(size, "max-message must be between 256B and 16MiB", "the default is \"64KiB\""));
            }
            options.max_message = bytes as usize;
        }
        if let Some(rate) = &s.rate {
            if !(rate.get_ref().is_finite() && *rate.get_ref() > 0.0) {
                return Err(self.err(rate, "rate must be a positive number of messages per second", "the default is 50"));
            }
            options.rate = *rate.get_ref();
        }
        if let Some(burst) = &s.burst {
            if *burst.get_ref() == 0 {
                return Err(self.err(burst, "burst must be at least 1", "the default is 100"));
            }
            options.burst = *burst.get_ref();
        }
        if let Some(d) = &s.heartbeat {
            options.heartbeat_interval = self.duration(d)?;
        }
        if let Some(d) = &s.heartbeat_timeout {
            options.heartbeat_timeout = self.duration(d)?;
        }
        if options.heartbeat_interval.is_zero() || options.heartbeat_timeout <= options.heartbeat_interval {
            let at = s.heartbeat_timeout.as_ref().or(s.heartbeat.as_ref()).map_or(raw.span(), |d| d.span());
            return Err(self.err_at(
                at,
                "heartbeat-timeout must be longer than a non-zero heartbeat",
                "the defaults are \"10s\" and \"30s\"",
            ));
        }
        if let Some(var) = &s.token_secret_env {
            match std::env::var(var.get_ref()) {
                Ok(secret) if secret.len() >= 16 => options.token_secret = Some(secret.into_bytes()),
                Ok(_) => {
                    return Err(self.err(
                        var,
                        format!("the secret in ${} is shorter than 16 bytes", var.get_ref()),
                        "use a long random secret, e.g. `openssl rand -hex 32`",
                    ));
                }
                Err(_) => {
                    return Err(self.err(
                        var,
                        format!("${} is not set", var.get_ref()),
                        "export the room token secret in that variable, or remove token-secret-env to admit everyone",
                    ));
                }
            }
        }
        Ok(ServerConfig { span: raw.span(), listen, media_ip, options })
    }

    fn client(&self, raw: &Spanned<RawClient>) -> Result<ClientConfig, ConfigError> {
        let c = raw.get_ref();
        let url = c.server.get_ref();
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(self.err(&c.server, format!("`{url}` is not a WebSocket URL"), "e.g. server = \"ws://127.0.0.1:8080/ws\""));
        }
        for (key, value) in [("room", &c.room), ("user", &c.user)] {
            let v = value.get_ref();
            if v.is_empty() || v.len() > 128 {
                return Err(self.err(value, format!("{key} must be 1 to 128 characters"), format!("e.g. {key} = \"demo\"")));
            }
        }
        let media_ip = match &c.media_ip {
            None => std::net::IpAddr::from([127, 0, 0, 1]),
            Some(ip) => ip
                .get_ref()
                .parse()
                .map_err(|_| self.err(ip, format!("`{}` is not an IP address", ip.get_ref()), "e.g. media-ip = \"127.0.0.1\""))?,
        };
        Ok(ClientConfig { span: raw.span(), url: url.clone(), room: c.room.get_ref().clone(), user: c.user.get_ref().clone(), media_ip })
    }

    fn stage(&self, raw: &Spanned<RawStage>, has_server: bool) -> Result<StageConfig, ConfigError> {
        let s = raw.get_ref();
        let id = s.id.get_ref().clone();
        let config_json = match &s.config {
            None => "{}".to_string(),
            Some(table) => serde_json::to_string(table.get_ref()).map_err(|e| {
                self.err(table, format!("config cannot be passed to the plugin: {e}"), "use strings, numbers, booleans, arrays and tables")
            })?,
        };
        let plugin = match (&s.plugin, &s.builtin) {
            (Some(plugin), None) => plugin,
            (None, Some(name)) => return self.builtin_stage(raw, name, config_json),
            (Some(_), Some(b)) => return Err(self.err(b, "a stage runs a plugin or a built-in, not both", "remove `plugin` or `builtin`")),
            (None, None) => {
                return Err(self.err(
                    &s.id,
                    format!("stage `{id}` has neither `plugin` nor `builtin`"),
                    "add plugin = \"stock:gain\" (or a .wasm path), or builtin = \"opus-encoder\"",
                ));
            }
        };
        let plugin_bytes = self.plugin_bytes(plugin)?;
        if let Some(pin) = &s.sha256 {
            let want = pin.get_ref().to_ascii_lowercase();
            if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(self.err(pin, "sha256 must be 64 hex digits", "compute it with `sha256sum PLUGIN.wasm`"));
            }
            let have = hex(&Sha256::digest(&plugin_bytes));
            if have != want {
                return Err(self.err(
                    pin,
                    format!("digest mismatch: the plugin's sha256 is {have}"),
                    "the plugin changed since it was pinned; if the change is expected, update sha256",
                ));
            }
        }
        let limits = self.limits(s.limits.as_ref())?;
        let (restart, recorder) = self.restart(s.restart.as_ref())?;
        let e2ee = s.e2ee.as_ref().is_some_and(|e| *e.get_ref());
        let failure = match &s.failure {
            None => FailurePolicy::FailClosed,
            Some(f) => match f.get_ref().as_str() {
                "fail-closed" => FailurePolicy::FailClosed,
                "fail-open" if e2ee => {
                    return Err(self.err(
                        f,
                        format!("stage `{id}` is an E2EE stage and cannot fail open"),
                        "bypassing an encryption stage would send media in the clear; use \"fail-closed\" or \"stop\"",
                    ));
                }
                "fail-open" => FailurePolicy::FailOpen,
                "stop" => FailurePolicy::Stop,
                other => {
                    return Err(self.err(f, format!("unknown failure policy `{other}`"), "use \"fail-closed\", \"fail-open\" or \"stop\""));
                }
            },
        };
        Ok(StageConfig {
            inputs: self.stage_inputs(&id, raw, has_server)?,
            id,
            span: raw.span(),
            runs: Runs::Plugin(PluginRef { name: plugin.get_ref().clone(), span: plugin.span(), bytes: plugin_bytes }),
            config_json,
            limits,
            restart,
            recorder,
            failure,
            e2ee,
        })
    }

    /// A `builtin = "..."` stage: native, so none of the sandbox settings.
    fn builtin_stage(&self, raw: &Spanned<RawStage>, name: &Spanned<String>, config_json: String) -> Result<StageConfig, ConfigError> {
        let s = raw.get_ref();
        let owner = "built-in stages (they run natively in the host)";
        self.not_for(owner, "sha256", &s.sha256)?;
        self.not_for(owner, "failure", &s.failure)?;
        self.not_for(owner, "e2ee", &s.e2ee)?;
        if s.limits.is_some() || s.restart.is_some() {
            return Err(self.err(name, "`limits` and `restart` apply to plugins, not to built-in stages", "remove them from this stage"));
        }
        if !Builtin::NAMES.contains(&name.get_ref().as_str()) {
            return Err(self.err(
                name,
                format!("unknown built-in stage `{}`", name.get_ref()),
                format!("built-in stages are: {}", Builtin::NAMES.join(", ")),
            ));
        }
        let builtin = Builtin::parse(name.get_ref(), &config_json).map_err(|e| match &s.config {
            Some(table) => self.err(table, e, "see the stage's settings in `medianode::builtin`"),
            None => self.err(name, e, "see the stage's settings in `medianode::builtin`"),
        })?;
        Ok(StageConfig {
            id: s.id.get_ref().clone(),
            span: raw.span(),
            inputs: self.stage_inputs(s.id.get_ref(), raw, false)?,
            runs: Runs::Builtin(builtin),
            config_json,
            limits: Limits::default(),
            restart: RestartConfig::default(),
            recorder: 0,
            failure: FailurePolicy::FailClosed,
            e2ee: false,
        })
    }

    fn plugin_bytes(&self, plugin: &Spanned<String>) -> Result<Arc<[u8]>, ConfigError> {
        let name = plugin.get_ref();
        if let Some(stock_name) = name.strip_prefix(stock::PREFIX) {
            return stock::bytes(stock_name).map(Arc::from).ok_or_else(|| {
                let names: Vec<_> = stock::names().collect();
                self.err(plugin, format!("unknown stock plugin `{stock_name}`"), format!("stock plugins are: {}", names.join(", ")))
            });
        }
        let path = self.file.dir().join(name);
        std::fs::read(&path).map(Arc::from).map_err(|e| {
            self.err(
                plugin,
                format!("cannot read plugin file {}: {e}", path.display()),
                "paths are relative to the pipeline file; build the plugin with `cargo build --target wasm32-wasip2`, or use a stock plugin like \"stock:gain\"",
            )
        })
    }

    fn limits(&self, raw: Option<&RawLimits>) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        let Some(raw) = raw else { return Ok(limits) };
        if let Some(m) = &raw.memory {
            limits.memory = self.size(m)?;
            if limits.memory < 1 << 20 || limits.memory > MAX_MEMORY {
                return Err(self.err(m, "memory limit out of range", "use 1MiB to 4GiB"));
            }
        }
        if let Some(d) = &raw.deadline {
            limits.deadline = self.duration(d)?;
            if limits.deadline < Duration::from_micros(100) || limits.deadline > Duration::from_secs(10) {
                return Err(self.err(d, "deadline out of range", "use 100us to 10s; audio stages want less than a block (\"5ms\")"));
            }
        }
        if let Some(d) = &raw.init_deadline {
            limits.init_deadline = self.duration(d)?;
            if limits.init_deadline < Duration::from_millis(1) || limits.init_deadline > Duration::from_secs(60) {
                return Err(self.err(d, "init-deadline out of range", "use 1ms to 60s"));
            }
        }
        if let Some(s) = &raw.stack {
            let stack = self.size(s)?;
            if stack < STACK_RANGE.0 || stack > STACK_RANGE.1 {
                return Err(self.err(s, "stack limit out of range", "use 64KiB to 8MiB"));
            }
            limits.stack = stack as usize;
        }
        if let Some(s) = &raw.state {
            limits.state = self.size(s)?;
        }
        if let Some(l) = &raw.log {
            limits.log_bytes = self.size(l)?;
            if limits.log_bytes < 1024 || limits.log_bytes > 64 << 20 {
                return Err(self.err(l, "log budget out of range", "use 1KiB to 64MiB (bytes of plugin log per second)"));
            }
        }
        if let Some(l) = &raw.log_lines {
            limits.log_lines = *l.get_ref();
            if !(1..=100_000).contains(&limits.log_lines) {
                return Err(self.err(l, "log-lines out of range", "use 1 to 100000 (plugin log lines per second)"));
            }
        }
        Ok(limits)
    }

    fn restart(&self, raw: Option<&RawRestart>) -> Result<(RestartConfig, usize), ConfigError> {
        let mut r = RestartConfig::default();
        let Some(raw) = raw else { return Ok((r, 50)) };
        if let Some(v) = &raw.max_restarts {
            r.max_restarts = *v.get_ref();
        }
        if let Some(v) = &raw.window {
            r.window = self.duration(v)?;
        }
        if let Some(v) = &raw.long_max_restarts {
            r.long_max_restarts = *v.get_ref();
        }
        if let Some(v) = &raw.long_window {
            r.long_window = self.duration(v)?;
        }
        if let Some(v) = &raw.backoff_base {
            r.backoff_base = self.duration(v)?;
        }
        if let Some(v) = &raw.backoff_cap {
            r.backoff_cap = self.duration(v)?;
            if r.backoff_cap < r.backoff_base {
                return Err(self.err(v, "backoff-cap is below backoff-base", "the cap must be at least the base delay"));
            }
        }
        if let Some(v) = &raw.healthy_after {
            r.healthy_after = self.duration(v)?;
        }
        if let Some(v) = &raw.jitter {
            if !(0.0..=1.0).contains(v.get_ref()) {
                return Err(self.err(v, "jitter out of range", "use 0.0 (none) to 1.0 (±100%); 0.2 is typical"));
            }
            r.jitter = *v.get_ref();
        }
        if let Some(v) = &raw.standby {
            r.standby = *v.get_ref();
        }
        let recorder = raw.recorder.as_ref().map_or(50, |v| *v.get_ref());
        Ok((r, recorder))
    }

    fn sink(&self, raw: &Spanned<RawSink>) -> Result<SinkConfig, ConfigError> {
        let s = raw.get_ref();
        let id = s.id.get_ref().clone();
        let kind_name = s.kind.get_ref().as_str();
        let owner = format!("{kind_name} sinks");
        if kind_name != "meter" {
            self.not_for(&owner, "report-every", &s.report_every)?;
        }
        if kind_name != "channel" {
            self.not_for(&owner, "capacity", &s.capacity)?;
        }
        if kind_name != "wav" {
            self.not_for(&owner, "path", &s.path)?;
            self.not_for(&owner, "format", &s.format)?;
        }
        if kind_name != "device" {
            self.not_for(&owner, "device", &s.device)?;
            self.not_for(&owner, "channels", &s.channels)?;
        }
        let kind = match kind_name {
            "meter" => {
                let report_every = match &s.report_every {
                    None => Duration::from_secs(1),
                    Some(v) => self.duration(v)?,
                };
                SinkKind::Meter { report_every }
            }
            "null" => SinkKind::Null,
            "channel" => SinkKind::Channel { capacity: s.capacity.as_ref().map_or(1024, |c| *c.get_ref()) },
            "wav" => {
                let Some(path) = &s.path else {
                    return Err(self.err(&s.kind, "a wav sink needs `path`", "add path = \"output.wav\" (relative to this file)"));
                };
                let format = match s.format.as_ref().map(|f| f.get_ref().as_str()) {
                    None | Some("f32") => WavFormat::F32,
                    Some("s16") => WavFormat::S16,
                    Some(other) => {
                        let span = s.format.as_ref().map_or(0..0, |f| f.span());
                        return Err(self.err_at(span, format!("unknown WAV format `{other}`"), "use \"f32\" (exact) or \"s16\""));
                    }
                };
                SinkKind::Wav { path: self.file.dir().join(path.get_ref()), format }
            }
            "device" => {
                let channels = match &s.channels {
                    Some(c) if !(1..=8).contains(c.get_ref()) => return Err(self.err(c, "channels out of range", "use 1 to 8")),
                    other => other.as_ref().map_or(2, |c| *c.get_ref()),
                };
                SinkKind::Device { device: s.device.as_ref().map(|d| d.get_ref().clone()), channels }
            }
            "publish" => SinkKind::Publish,
            other => {
                return Err(self.err(
                    &s.kind,
                    format!("unknown sink kind `{other}`"),
                    "sink kinds are: meter, wav, device, null, channel, publish",
                ));
            }
        };
        Ok(SinkConfig { inputs: self.inputs(&id, &s.inputs)?, id, span: raw.span(), kind })
    }
}
