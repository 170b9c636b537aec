//! Audio devices (cpal): a microphone as a source, speakers as a sink.
//!
//! The device's audio callback runs on a thread the audio system owns and
//! must never block, allocate or wait. So each device talks to the pipeline
//! through a lock-free single-producer ring of f32 samples (rtrb), allocated
//! once with room for one second:
//!
//! - capture: the callback copies what it got into the ring; when the ring
//!   is full (the pipeline stalled) the newest samples are dropped and
//!   counted, never waited for. The pipeline takes whole blocks each tick.
//! - playback: the pipeline writes blocks into the ring; the callback copies
//!   out what it needs and fills the rest with silence, counted as an
//!   underrun, when the pipeline fell behind.
//!
//! Both ends open the device at 48 kHz f32 with the configured channel count;
//! a device that cannot do that is an error naming what it can do.

use super::SAMPLE_RATE;
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the callbacks count, readable while the stream runs.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Samples the callback moved.
    pub samples: AtomicU64,
    /// Capture: samples dropped because the ring was full.
    pub overflowed: AtomicU64,
    /// Playback: samples of silence played because the ring was empty.
    pub underran: AtomicU64,
}

impl DeviceStats {
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "samples": self.samples.load(Ordering::Relaxed),
            "overflowed": self.overflowed.load(Ordering::Relaxed),
            "underran": self.underran.load(Ordering::Relaxed),
        })
    }
}

/// The audio host and its devices, one per line, for `medianode devices`.
pub fn describe() -> String {
    let host = cpal::default_host();
    let default_in = host.default_input_device().map(|d| d.to_string());
    let default_out = host.default_output_device().map(|d| d.to_string());
    let mut out = format!("audio host: {:?} (name a device by its id or its quoted name)\n", host.id());
    let devices: Vec<cpal::Device> = host.devices().map(std::iter::Iterator::collect).unwrap_or_default();
    if devices.is_empty() {
        out.push_str("no devices found\n");
    }
    for d in devices {
        let name = d.to_string();
        let mut roles = Vec::new();
        if d.supports_input() {
            roles.push(if default_in.as_deref() == Some(name.as_str()) { "input (default)" } else { "input" });
        }
        if d.supports_output() {
            roles.push(if default_out.as_deref() == Some(name.as_str()) { "output (default)" } else { "output" });
        }
        let id = d.id().map(|id| id.to_string()).unwrap_or_default();
        out.push_str(&format!("{id}  \"{name}\": {}\n", roles.join(", ")));
    }
    out
}

/// Ring capacity: one second of audio.
fn ring_capacity(channels: u8) -> usize {
    SAMPLE_RATE as usize * usize::from(channels.max(1))
}

/// Finds a device by its name (as cpal shows it) or id, or the default.
fn find(name: Option<&str>, input: bool) -> Result<cpal::Device, String> {
    let host = cpal::default_host();
    let what = if input { "input" } else { "output" };
    let found = match name {
        None => {
            if input {
                host.default_input_device()
            } else {
                host.default_output_device()
            }
        }
        Some(name) => host.devices().ok().and_then(|mut devices| {
            devices.find(|d| {
                let usable = if input { d.supports_input() } else { d.supports_output() };
                usable && (d.to_string() == name || d.id().is_ok_and(|id| id.to_string() == name))
            })
        }),
    };
    found.ok_or_else(|| {
        let mut known: Vec<String> = host
            .devices()
            .map(|ds| ds.filter(|d| if input { d.supports_input() } else { d.supports_output() }).map(|d| d.to_string()).collect())
            .unwrap_or_default();
        known.sort();
        let known = if known.is_empty() { "none found".to_string() } else { known.join(", ") };
        match name {
            Some(name) => format!("no audio {what} device named `{name}` (on host {:?}); {what} devices: {known}", host.id()),
            None => format!("no default audio {what} device (on host {:?}); {what} devices: {known}", host.id()),
        }
    })
}

fn stream_config(channels: u8) -> cpal::StreamConfig {
    cpal::StreamConfig { channels: u16::from(channels), sample_rate: SAMPLE_RATE, buffer_size: cpal::BufferSize::Default }
}

fn open_error(device: &cpal::Device, channels: u8, input: bool, e: impl std::fmt::Display) -> String {
    let ranges: Vec<String> = if input {
        device.supported_input_configs().map(|c| c.map(|c| format!("{c:?}")).collect())
    } else {
        device.supported_output_configs().map(|c| c.map(|c| format!("{c:?}")).collect())
    }
    .unwrap_or_default();
    format!("cannot open `{device}` at 48 kHz f32 with {channels} channel(s): {e}; it supports: {}", ranges.join("; "))
}

/// A capture device feeding the pipeline.
pub struct DeviceInput {
    // Dropping the stream stops the callback.
    stream: cpal::Stream,
    /// Capture starts at the first read, not when the pipeline is built:
    /// audio captured before the pipeline runs would only be latency.
    started: bool,
    ring: rtrb::Consumer<f32>,
    pub channels: u8,
    pub stats: Arc<DeviceStats>,
}

impl DeviceInput {
    pub fn open(name: Option<&str>, channels: u8) -> Result<DeviceInput, String> {
        let device = find(name, true)?;
        let (mut producer, ring) = rtrb::RingBuffer::new(ring_capacity(channels));
        let stats = Arc::new(DeviceStats::default());
        let counts = stats.clone();
        let width = usize::from(channels.max(1));
        let on_data = move |data: &[f32], _: &cpal::InputCallbackInfo| {
            // Whole frames only, so that the channels never slip.
            let fit = data.len().min(producer.slots()) / width * width;
            let (pushed, _) = producer.push_partial_slice(&data[..fit]);
            counts.samples.fetch_add(pushed.len() as u64, Ordering::Relaxed);
            if fit < data.len() {
                counts.overflowed.fetch_add((data.len() - fit) as u64, Ordering::Relaxed);
            }
        };
        let on_error = |e: cpal::Error| tracing::warn!(error = %e, "audio input device error");
        let stream = device
            .build_input_stream::<f32, _, _>(stream_config(channels), on_data, on_error, None)
            .map_err(|e| open_error(&device, channels, true, e))?;
        tracing::info!(device = %device, channels, "audio input open");
        Ok(DeviceInput { stream, started: false, ring, channels, stats })
    }

    /// Moves whole blocks of `block_len` samples into `out`, at most
    /// `max_blocks`; returns how many. Never waits: none may be ready yet.
    pub fn read_blocks(&mut self, block_len: usize, max_blocks: usize, out: &mut Vec<f32>) -> usize {
        if !self.started {
            self.started = true;
            if let Err(e) = self.stream.play() {
                tracing::error!(error = %e, "cannot start the audio input; the source stays silent");
            }
        }
        let blocks = (self.ring.slots() / block_len.max(1)).min(max_blocks);
        let start = out.len();
        out.resize(start + blocks * block_len, 0.0);
        let (filled, _) = self.ring.pop_partial_slice(&mut out[start..]);
        let got = filled.len();
        out.truncate(start + got);
        got / block_len.max(1)
    }
}

/// A playback device fed by the pipeline.
pub struct DeviceOutput {
    _stream: cpal::Stream,
    ring: rtrb::Producer<f32>,
    pub channels: u8,
    pub stats: Arc<DeviceStats>,
}

impl DeviceOutput {
    pub fn open(name: Option<&str>, channels: u8) -> Result<DeviceOutput, String> {
        let device = find(name, false)?;
        let (ring, mut consumer) = rtrb::RingBuffer::new(ring_capacity(channels));
        let stats = Arc::new(DeviceStats::default());
        let counts = stats.clone();
        let on_data = move |data: &mut [f32], _: &cpal::OutputCallbackInfo| {
            let (filled, missing) = consumer.pop_partial_slice(data);
            counts.samples.fetch_add(filled.len() as u64, Ordering::Relaxed);
            if !missing.is_empty() {
                missing.fill(0.0);
                counts.underran.fetch_add(missing.len() as u64, Ordering::Relaxed);
            }
        };
        let on_error = |e: cpal::Error| tracing::warn!(error = %e, "audio output device error");
        let stream = device
            .build_output_stream::<f32, _, _>(stream_config(channels), on_data, on_error, None)
            .map_err(|e| open_error(&device, channels, false, e))?;
        stream.play().map_err(|e| format!("cannot start `{device}`: {e}"))?;
        tracing::info!(device = %device, channels, "audio output open");
        Ok(DeviceOutput { _stream: stream, ring, channels, stats })
    }

    /// Waits, at most `timeout`, for what is queued to be played (when the
    /// pipeline ends: the last blocks should be heard, not cut off).
    pub fn drain(&self, timeout: std::time::Duration) {
        let until = std::time::Instant::now() + timeout;
        while self.ring.slots() < self.ring.buffer().capacity() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Queues interleaved samples with `channels` channels for playback,
    /// spreading mono to every device channel. Only whole frames go in, so
    /// the channels never slip; frames that do not fit are dropped (counted
    /// as overflow), never waited for.
    pub fn write(&mut self, channels: u8, samples: &[f32]) {
        let (from, to) = (usize::from(channels.max(1)), usize::from(self.channels.max(1)));
        let frames = samples.len() / from;
        let fit = frames.min(self.ring.slots() / to);
        if fit < frames {
            self.stats.overflowed.fetch_add(((frames - fit) * to) as u64, Ordering::Relaxed);
        }
        let Ok(chunk) = self.ring.write_chunk_uninit(fit * to) else { return };
        // Mono spreads; otherwise channels map one to one, extras silent.
        let spread = samples
            .chunks_exact(from)
            .take(fit)
            .flat_map(|frame| (0..to).map(move |c| if from == 1 { frame[0] } else { frame.get(c).copied().unwrap_or(0.0) }));
        chunk.fill_from_iter(spread);
    }
}
