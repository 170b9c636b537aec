//! `[[stage]]`: a plugin under supervision, or a built-in stage, with its
//! limits, restart policy and failure policy.

use super::builtin::Builtin;
use super::check::Cx;
use super::schema::{RawLimits, RawRestart, RawStage};
use super::*;
use crate::supervision::backoff::RestartConfig;
use crate::supervision::{FailurePolicy, Limits, MAX_MEMORY};
use toml::Spanned;

#[derive(Debug)]
pub struct StageConfig {
    pub id: String,
    pub span: Span,
    /// What runs the stage.
    pub runs: Runs,
    pub config_json: String,
    /// Where `config` is written, to point at a plugin's complaint about it.
    pub config_span: Option<Span>,
    pub limits: Limits,
    pub restart: RestartConfig,
    /// Flight recorder length.
    pub recorder: usize,
    pub failure: FailurePolicy,
    /// Encrypts or decrypts media: never bypassed (`fail-open` is refused).
    pub e2ee: bool,
    /// Empty for a stage that serves `[server]` or `[client]`.
    pub inputs: Vec<Input>,
}

/// What runs a stage.
#[derive(Debug)]
pub enum Runs {
    /// A wasm plugin, supervised.
    Plugin(PluginRef),
    /// Native code in the host (see [`super::builtin`]); `limits`,
    /// `restart` and `failure` do not apply.
    Builtin(Builtin),
}

/// A stage's plugin.
#[derive(Debug)]
pub struct PluginRef {
    /// `stock:NAME` or the file path as written.
    pub name: String,
    pub span: Span,
    /// The pinned SHA-256 (lowercase hex) and where it is written.
    pub sha256: Option<(String, Span)>,
    /// The component's bytes: empty until the host reads the plugin (and
    /// checks it against `sha256`).
    pub bytes: Arc<[u8]>,
    /// Where `trust = "native"` is written, if it is: the file is a native
    /// library that the node loads unsandboxed.
    pub native: Option<Span>,
}

impl PluginRef {
    /// The prefix of stock plugins' names (`stock:gain`).
    pub const STOCK: &str = "stock:";

    /// The stock plugin's name, or `None` for a file.
    pub fn stock_name(&self) -> Option<&str> {
        self.name.strip_prefix(Self::STOCK)
    }
}

impl StageConfig {
    /// Whether the stage serves `[server]` or `[client]` (it has no `inputs`).
    pub fn serves(&self) -> bool {
        self.inputs.is_empty()
    }

    /// The plugin name, or `builtin:NAME`.
    pub fn runs_name(&self) -> String {
        match &self.runs {
            Runs::Plugin(p) => p.name.clone(),
            Runs::Builtin(b) => format!("builtin:{}", b.name()),
        }
    }
}

/// The stack a stage may ask for.
const STACK_RANGE: std::ops::RangeInclusive<u64> = 64 << 10..=8 << 20;

/// Checks one `[[stage]]`; `None` after reporting what is wrong.
/// `networked`: the file has a `[server]` or `[client]`, whose stages have
/// no inputs.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawStage>, networked: bool) -> Option<StageConfig> {
    let s = raw.get_ref();
    let errors_before = cx.error_count();
    let id = s.id.get_ref().clone();
    let config_json = match &s.config {
        None => "{}".to_string(),
        Some(table) => cx
            .ok(serde_json::to_string(table.get_ref()).map_err(|e| {
                cx.err(table, format!("config cannot be passed to the plugin: {e}"), "use strings, numbers, booleans, arrays and tables")
            }))
            .unwrap_or_default(),
    };
    let inputs = match &s.inputs {
        Some(inputs) => cx.inputs(&id, inputs),
        None if networked && s.builtin.is_none() => Vec::new(),
        None => {
            cx.report(cx.err(
                &s.id,
                format!("`{id}` has no inputs"),
                "list its inputs, e.g. inputs = [\"tone\"]; only stages serving a [server] (signaling, forwarding) or a [client] (E2EE) go without",
            ));
            Vec::new()
        }
    };
    let runs = match (&s.plugin, &s.builtin) {
        (Some(plugin), None) => Runs::Plugin(plugin_ref(cx, plugin, &s.sha256, &s.trust)),
        (None, Some(name)) => Runs::Builtin(builtin(cx, s, name, &config_json)?),
        (Some(_), Some(b)) => {
            cx.report(cx.err(b, "a stage runs a plugin or a built-in, not both", "remove `plugin` or `builtin`"));
            return None;
        }
        (None, None) => {
            cx.report(cx.err(
                &s.id,
                format!("stage `{id}` has neither `plugin` nor `builtin`"),
                "add plugin = \"stock:gain\" (or a .wasm path), or builtin = \"opus-encoder\"",
            ));
            return None;
        }
    };
    let limits = s.limits.as_ref().map_or_else(Limits::default, |l| limits(cx, l));
    let (restart, recorder) = s.restart.as_ref().map_or_else(|| (RestartConfig::default(), 50), |r| restart(cx, r));
    let e2ee = s.e2ee.as_ref().is_some_and(|e| *e.get_ref());
    let failure = match &s.failure {
        None => FailurePolicy::FailClosed,
        Some(f) => match f.get_ref().as_str() {
            "fail-closed" => FailurePolicy::FailClosed,
            "fail-open" if e2ee => {
                cx.report(cx.err(
                    f,
                    format!("stage `{id}` is an E2EE stage and cannot fail open"),
                    "bypassing an encryption stage would send media in the clear; use \"fail-closed\" or \"stop\"",
                ));
                FailurePolicy::FailClosed
            }
            "fail-open" => FailurePolicy::FailOpen,
            "stop" => FailurePolicy::Stop,
            other => {
                cx.report(cx.err(f, format!("unknown failure policy `{other}`"), "use \"fail-closed\", \"fail-open\" or \"stop\""));
                FailurePolicy::FailClosed
            }
        },
    };
    (cx.error_count() == errors_before).then(|| StageConfig {
        inputs,
        id,
        span: raw.span(),
        runs,
        config_json,
        config_span: s.config.as_ref().map(toml::Spanned::span),
        limits,
        restart,
        recorder,
        failure,
        e2ee,
    })
}

fn plugin_ref(cx: &Cx, plugin: &Spanned<String>, sha256: &Option<Spanned<String>>, trust: &Option<Spanned<String>>) -> PluginRef {
    let native = trust.as_ref().and_then(|trust| match trust.get_ref().as_str() {
        "native" if plugin.get_ref().starts_with(PluginRef::STOCK) => {
            cx.report(cx.err(trust, "stock plugins are wasm components, always sandboxed", "remove trust"));
            None
        }
        "native" => Some(trust.span()),
        "sandbox" => None,
        other => {
            cx.report(cx.err(
                trust,
                format!("unknown trust `{other}`"),
                "use trust = \"native\" to load a native library (unsandboxed: it can take the whole node down), or leave trust out",
            ));
            None
        }
    });
    let sha256 = sha256.as_ref().and_then(|pin| {
        let want = pin.get_ref().to_ascii_lowercase();
        if want.len() != 64 || !want.chars().all(|c| c.is_ascii_hexdigit()) {
            cx.report(cx.err(pin, "sha256 must be 64 hex digits", "compute it with `sha256sum PLUGIN.wasm`"));
            return None;
        }
        Some((want, pin.span()))
    });
    PluginRef { name: plugin.get_ref().clone(), span: plugin.span(), sha256, bytes: Arc::from([]), native }
}

/// A `builtin = "..."` stage: native, so none of the sandbox settings.
fn builtin(cx: &Cx, s: &RawStage, name: &Spanned<String>, config_json: &str) -> Option<Builtin> {
    let owner = "built-in stages (they run natively in the host)";
    cx.not_for(owner, "sha256", &s.sha256);
    cx.not_for(owner, "failure", &s.failure);
    cx.not_for(owner, "e2ee", &s.e2ee);
    cx.not_for(owner, "trust", &s.trust);
    if s.limits.is_some() || s.restart.is_some() {
        cx.report(cx.err(name, "`limits` and `restart` apply to plugins, not to built-in stages", "remove them from this stage"));
    }
    if !Builtin::NAMES.contains(&name.get_ref().as_str()) {
        let hint = format!("built-in stages are: {}", Builtin::NAMES.join(", "));
        cx.report(cx.err(name, format!("unknown built-in stage `{}`", name.get_ref()), hint));
        return None;
    }
    let hint = "see the stage's settings in `medianode_core::config::builtin`";
    cx.ok(Builtin::parse(name.get_ref(), config_json).map_err(|e| match &s.config {
        Some(table) => cx.err(table, e, hint),
        None => cx.err(name, e, hint),
    }))
}

/// `[stage.limits]`: each setting checked on its own.
fn limits(cx: &Cx, raw: &RawLimits) -> Limits {
    let mut limits = Limits::default();
    if let Some(m) = &raw.memory {
        limits.memory = cx.size_in(m, 1 << 20..=MAX_MEMORY, "memory limit out of range", "use 1MiB to 4GiB").unwrap_or(limits.memory);
    }
    if let Some(d) = &raw.deadline {
        let range = Duration::from_micros(100)..=Duration::from_secs(10);
        let hint = "use 100us to 10s; audio stages want less than a block (\"5ms\")";
        limits.deadline = cx.duration_in(d, range, "deadline out of range", hint).unwrap_or(limits.deadline);
    }
    if let Some(d) = &raw.init_deadline {
        let range = Duration::from_millis(1)..=Duration::from_secs(60);
        limits.init_deadline = cx.duration_in(d, range, "init-deadline out of range", "use 1ms to 60s").unwrap_or(limits.init_deadline);
    }
    if let Some(s) = &raw.stack {
        let stack = cx.size_in(s, STACK_RANGE, "stack limit out of range", "use 64KiB to 8MiB");
        limits.stack = stack.map_or(limits.stack, |b| b as usize);
    }
    if let Some(s) = &raw.state {
        limits.state = cx.ok(cx.size(s)).unwrap_or(limits.state);
    }
    if let Some(l) = &raw.log {
        let hint = "use 1KiB to 64MiB (bytes of plugin log per second)";
        limits.log_bytes = cx.size_in(l, 1024..=64 << 20, "log budget out of range", hint).unwrap_or(limits.log_bytes);
    }
    if let Some(l) = &raw.log_lines {
        if (1..=100_000).contains(l.get_ref()) {
            limits.log_lines = *l.get_ref();
        } else {
            cx.report(cx.err(l, "log-lines out of range", "use 1 to 100000 (plugin log lines per second)"));
        }
    }
    limits
}

/// `[stage.restart]`, and the flight recorder's length.
fn restart(cx: &Cx, raw: &RawRestart) -> (RestartConfig, usize) {
    let mut r = RestartConfig::default();
    let duration =
        |value: &Option<Spanned<String>>, default: Duration| value.as_ref().and_then(|v| cx.ok(cx.duration(v))).unwrap_or(default);
    if let Some(v) = &raw.max_restarts {
        r.max_restarts = *v.get_ref();
    }
    r.window = duration(&raw.window, r.window);
    if let Some(v) = &raw.long_max_restarts {
        r.long_max_restarts = *v.get_ref();
    }
    r.long_window = duration(&raw.long_window, r.long_window);
    r.backoff_base = duration(&raw.backoff_base, r.backoff_base);
    r.backoff_cap = duration(&raw.backoff_cap, r.backoff_cap);
    if let Some(v) = &raw.backoff_cap
        && r.backoff_cap < r.backoff_base
    {
        cx.report(cx.err(v, "backoff-cap is below backoff-base", "the cap must be at least the base delay"));
    }
    r.healthy_after = duration(&raw.healthy_after, r.healthy_after);
    if let Some(v) = &raw.jitter {
        if (0.0..=1.0).contains(v.get_ref()) {
            r.jitter = *v.get_ref();
        } else {
            cx.report(cx.err(v, "jitter out of range", "use 0.0 (none) to 1.0 (±100%); 0.2 is typical"));
        }
    }
    if let Some(v) = &raw.standby {
        r.standby = *v.get_ref();
    }
    let recorder = raw.recorder.as_ref().map_or(50, |v| *v.get_ref());
    (r, recorder)
}
