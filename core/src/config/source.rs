//! `[[source]]`: items made by the host, each kind with its own settings.

use super::check::Cx;
use super::schema::RawSource;
use super::*;
use toml::Spanned;

#[derive(Debug)]
pub struct SourceConfig {
    pub id: String,
    pub span: Span,
    pub kind: SourceKind,
    /// Items to produce before the source ends; `None` = endless.
    pub count: Option<u64>,
    /// Every Nth item is poison (a NaN sample, or a payload starting with
    /// `poison`), to exercise quarantine.
    pub poison_every: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// A sine tone: 48 kHz f32 blocks, one per tick.
    Tone { frequency: f64, amplitude: f64, channels: u8 },
    /// A sine sweeping exponentially from `from` to `to` Hz over `period`,
    /// then again.
    Sweep { from: f64, to: f64, period: Duration, amplitude: f64, channels: u8 },
    /// A WAV file, converted to 48 kHz f32 with `channels` (the file's own
    /// count when `None`); ends with the file. `path` is relative to the
    /// working directory (the file's own path joined to the pipeline's
    /// directory).
    Wav { path: PathBuf, path_span: Span, channels: Option<u8> },
    /// An audio input device (`None`: the default one).
    Device { device: Option<String>, channels: u8 },
    /// Numbered frames of `size` bytes, `per_tick` per tick.
    Frames { size: usize, per_tick: u32 },
    /// The frames an edge node receives from `publisher` (opened by its
    /// E2EE stage): needs a `[client]`.
    Subscribe { publisher: String },
    /// Everyone an edge node hears: each publisher's Opus decoded, mixed
    /// with a limiter, one block of `channels` per tick: needs a
    /// `[client]`.
    Room { channels: u8 },
}

/// Every `kind`, for errors.
const KINDS: &str = "tone, sweep, wav, device, frames, subscribe, room";

impl SourceKind {
    /// The `kind` as written in pipeline files.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Tone { .. } => "tone",
            SourceKind::Sweep { .. } => "sweep",
            SourceKind::Wav { .. } => "wav",
            SourceKind::Device { .. } => "device",
            SourceKind::Frames { .. } => "frames",
            SourceKind::Subscribe { .. } => "subscribe",
            SourceKind::Room { .. } => "room",
        }
    }

    /// Whether it makes audio (or else frames).
    pub fn is_audio(&self) -> bool {
        !matches!(self, SourceKind::Frames { .. } | SourceKind::Subscribe { .. })
    }

    /// Which keys of `[[source]]` a kind takes (besides id, kind, count
    /// and poison-every).
    fn takes(kind: &str, key: &str) -> bool {
        match kind {
            "tone" => ["frequency", "amplitude", "channels"].contains(&key),
            "sweep" => ["from", "to", "period", "amplitude", "channels"].contains(&key),
            "wav" => ["path", "channels"].contains(&key),
            "device" => ["device", "channels"].contains(&key),
            "frames" => ["size", "per-tick"].contains(&key),
            "subscribe" => key == "publisher",
            "room" => key == "channels",
            _ => true,
        }
    }
}

/// Checks one `[[source]]`; `None` after reporting what is wrong.
pub(super) fn check(cx: &Cx, raw: &Spanned<RawSource>) -> Option<SourceConfig> {
    let s = raw.get_ref();
    let kind_name = s.kind.get_ref().as_str();
    let errors_before = cx.error_count();
    let keys = [
        ("frequency", s.frequency.as_ref().map(toml::Spanned::span)),
        ("amplitude", s.amplitude.as_ref().map(toml::Spanned::span)),
        ("channels", s.channels.as_ref().map(toml::Spanned::span)),
        ("size", s.size.as_ref().map(toml::Spanned::span)),
        ("per-tick", s.per_tick.as_ref().map(toml::Spanned::span)),
        ("path", s.path.as_ref().map(toml::Spanned::span)),
        ("device", s.device.as_ref().map(toml::Spanned::span)),
        ("from", s.from.as_ref().map(toml::Spanned::span)),
        ("to", s.to.as_ref().map(toml::Spanned::span)),
        ("period", s.period.as_ref().map(toml::Spanned::span)),
        ("publisher", s.publisher.as_ref().map(toml::Spanned::span)),
    ];
    for (key, span) in keys {
        if let Some(span) = span
            && !SourceKind::takes(kind_name, key)
        {
            cx.report(cx.err_at(
                span,
                format!("`{key}` is not a setting of {kind_name} sources"),
                format!("remove `{key}`, or change `kind`"),
            ));
        }
    }
    let amplitude = || match &s.amplitude {
        Some(a) if !(0.0..=1.0).contains(a.get_ref()) => {
            cx.report(cx.err(a, "amplitude out of range", "use 0.0 to 1.0 (full scale)"));
            0.25
        }
        other => other.as_ref().map_or(0.25, |a| *a.get_ref()),
    };
    let channels = || match &s.channels {
        Some(c) if !(1..=8).contains(c.get_ref()) => {
            cx.report(cx.err(c, "channels out of range", "use 1 to 8"));
            None
        }
        other => other.as_ref().map(|c| *c.get_ref()),
    };
    let frequency = |value: &Option<Spanned<f64>>, default: f64| match value {
        Some(f) if !(1.0..=24_000.0).contains(f.get_ref()) => {
            cx.report(cx.err(f, "frequency out of range", "use 1 to 24000 Hz (48 kHz audio)"));
            default
        }
        other => other.as_ref().map_or(default, |f| *f.get_ref()),
    };
    let kind = match kind_name {
        "tone" => SourceKind::Tone { frequency: frequency(&s.frequency, 440.0), amplitude: amplitude(), channels: channels().unwrap_or(1) },
        "sweep" => {
            let period = s.period.as_ref().and_then(|v| {
                cx.duration_in(v, Duration::from_millis(100)..=Duration::MAX, "sweep period too short", "use 100ms or more, e.g. \"10s\"")
            });
            let period = period.unwrap_or(Duration::from_secs(10));
            SourceKind::Sweep {
                from: frequency(&s.from, 20.0),
                to: frequency(&s.to, 20_000.0),
                period,
                amplitude: amplitude(),
                channels: channels().unwrap_or(1),
            }
        }
        "wav" => {
            let Some(path) = &s.path else {
                cx.report(cx.err(&s.kind, "a wav source needs `path`", "add path = \"input.wav\" (relative to this file)"));
                return None;
            };
            SourceKind::Wav { path: cx.file.dir().join(path.get_ref()), path_span: path.span(), channels: channels() }
        }
        "device" => SourceKind::Device { device: s.device.as_ref().map(|d| d.get_ref().clone()), channels: channels().unwrap_or(1) },
        "frames" => {
            let size = s.size.as_ref().and_then(|v| cx.size_in(v, 1..=1 << 20, "frame size out of range", "use 1B to 1MiB"));
            let size = size.map_or(1200, |s| s as usize);
            let per_tick = match &s.per_tick {
                Some(p) if !(1..=10_000).contains(p.get_ref()) => {
                    cx.report(cx.err(p, "per-tick out of range", "use 1 to 10000 frames per tick"));
                    1
                }
                other => other.as_ref().map_or(1, |p| *p.get_ref()),
            };
            SourceKind::Frames { size, per_tick }
        }
        "subscribe" => match &s.publisher {
            Some(p) if !p.get_ref().is_empty() => SourceKind::Subscribe { publisher: p.get_ref().clone() },
            _ => {
                cx.report(cx.err(&s.kind, "a subscribe source needs `publisher`", "name whose audio to take, e.g. publisher = \"alice\""));
                return None;
            }
        },
        "room" => match &s.channels {
            Some(c) if !(1..=2).contains(c.get_ref()) => {
                cx.report(cx.err(c, "a room source mixes 1 or 2 channels", "use channels = 1 (mono) or 2 (stereo)"));
                return None;
            }
            other => SourceKind::Room { channels: other.as_ref().map_or(1, |c| *c.get_ref()) },
        },
        other => {
            cx.report(cx.err(&s.kind, format!("unknown source kind `{other}`"), format!("source kinds are: {KINDS}")));
            return None;
        }
    };
    if let Some(p) = &s.poison_every
        && *p.get_ref() == 0
    {
        cx.report(cx.err(p, "poison-every = 0 marks nothing", "use 1 or more, or remove it"));
    }
    (cx.error_count() == errors_before).then(|| SourceConfig {
        id: s.id.get_ref().clone(),
        span: raw.span(),
        kind,
        count: s.count.as_ref().map(|c| *c.get_ref()),
        poison_every: s.poison_every.as_ref().map(|p| *p.get_ref()),
    })
}
