//! `[[sink]]`: where items end, each kind with its own settings.

use super::check::Cx;
use super::schema::RawSink;
use super::*;
use toml::Spanned;

#[derive(Debug)]
pub struct SinkConfig {
    pub id: String,
    pub span: Span,
    pub kind: SinkKind,
    pub inputs: Vec<Input>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// Logs level, count and gaps of audio every `report_every` of stream time.
    Meter { report_every: Duration },
    /// Counts and discards.
    Null,
    /// Hands batches to an in-process reader (`Pipeline::take_channel`).
    Channel { capacity: usize },
    /// Writes audio to a WAV file at 48 kHz.
    Wav { path: PathBuf, format: WavFormat },
    /// Plays audio on an output device (`None`: the default one).
    Device { device: Option<String>, channels: u8 },
    /// Publishes frames (Opus) to the room of the `[client]`, sealed by
    /// its E2EE stage.
    Publish,
}

/// Sample format of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavFormat {
    /// 32-bit float: exact.
    F32,
    /// 16-bit integer, with rounding and clipping to full scale.
    S16,
}

/// Every `kind`, for errors.
const KINDS: &str = "meter, wav, device, null, channel, publish";

impl SinkKind {
    /// The `kind` as written in pipeline files.
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Meter { .. } => "meter",
            SinkKind::Null => "null",
            SinkKind::Channel { .. } => "channel",
            SinkKind::Wav { .. } => "wav",
            SinkKind::Device { .. } => "device",
            SinkKind::Publish => "publish",
        }
    }
}

/// Checks one `[[sink]]`; `None` after reporting what is wrong.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawSink>) -> Option<SinkConfig> {
    let s = raw.get_ref();
    let errors_before = cx.error_count();
    let id = s.id.get_ref().clone();
    let kind_name = s.kind.get_ref().as_str();
    let owner = format!("{kind_name} sinks");
    if kind_name != "meter" {
        cx.not_for(&owner, "report-every", &s.report_every);
    }
    if kind_name != "channel" {
        cx.not_for(&owner, "capacity", &s.capacity);
    }
    if kind_name != "wav" {
        cx.not_for(&owner, "path", &s.path);
        cx.not_for(&owner, "format", &s.format);
    }
    if kind_name != "device" {
        cx.not_for(&owner, "device", &s.device);
        cx.not_for(&owner, "channels", &s.channels);
    }
    let kind = match kind_name {
        "meter" => {
            let report_every = s.report_every.as_ref().and_then(|v| cx.ok(cx.duration(v)));
            SinkKind::Meter { report_every: report_every.unwrap_or(Duration::from_secs(1)) }
        }
        "null" => SinkKind::Null,
        "channel" => SinkKind::Channel { capacity: s.capacity.as_ref().map_or(1024, |c| *c.get_ref()) },
        "wav" => {
            let format = match &s.format {
                None => WavFormat::F32,
                Some(f) => match f.get_ref().as_str() {
                    "f32" => WavFormat::F32,
                    "s16" => WavFormat::S16,
                    other => {
                        cx.report(cx.err(f, format!("unknown WAV format `{other}`"), "use \"f32\" (exact) or \"s16\""));
                        WavFormat::F32
                    }
                },
            };
            let Some(path) = &s.path else {
                cx.report(cx.err(&s.kind, "a wav sink needs `path`", "add path = \"output.wav\" (relative to this file)"));
                return None;
            };
            SinkKind::Wav { path: cx.file.dir().join(path.get_ref()), format }
        }
        "device" => {
            let channels = match &s.channels {
                Some(c) if !(1..=8).contains(c.get_ref()) => {
                    cx.report(cx.err(c, "channels out of range", "use 1 to 8"));
                    2
                }
                other => other.as_ref().map_or(2, |c| *c.get_ref()),
            };
            SinkKind::Device { device: s.device.as_ref().map(|d| d.get_ref().clone()), channels }
        }
        "publish" => SinkKind::Publish,
        other => {
            cx.report(cx.err(&s.kind, format!("unknown sink kind `{other}`"), format!("sink kinds are: {KINDS}")));
            return None;
        }
    };
    let inputs = cx.inputs(&id, &s.inputs);
    (cx.error_count() == errors_before).then(|| SinkConfig { inputs, id, span: raw.span(), kind })
}
