//! Sources: a sine tone, a sine sweep, a WAV file, an audio input device,
//! numbered frames, and an edge node's room (one publisher's frames, or
//! everyone mixed: [`super::mix`]).
//!
//! Each can mark every Nth item as poison (a NaN sample, or a payload that
//! starts with `poison`), which is how tests and demos exercise quarantine.

use super::SAMPLE_RATE;
use super::device::DeviceInput;
use super::mix::{MixStats, RoomMix};
use super::wav::{self, Pcm};
use crate::runtime::AudioBatch;
use crate::runtime::Items;
use crate::runtime::bindings::{BlockInfo, FrameBatch, FrameInfo};
use medianode_core::config::{SourceConfig, SourceKind};
use std::f64::consts::TAU;
use std::time::Duration;

/// Marks a poison frame.
pub const POISON: &[u8] = b"poison";

/// A source: one batch per tick until its count (or its file) runs out.
pub struct Source {
    generator: Generator,
    /// Items still to make; `None` = endless.
    remaining: Option<u64>,
    poison_every: Option<u64>,
    next_sequence: u64,
    /// Frames per channel in one tick.
    frames_per_tick: usize,
    /// The block being made, reused every tick.
    scratch: Vec<f32>,
    /// A batch to fill next, handed back by the pipeline once a sink was
    /// done with it: an audio tick allocates nothing.
    spare: Option<AudioBatch>,
}

/// What makes the items.
enum Generator {
    Tone {
        step: f64,
        amplitude: f64,
        channels: u8,
        phase: f64,
    },
    Sweep {
        from: f64,
        ratio: f64,
        period_frames: u64,
        amplitude: f64,
        channels: u8,
        phase: f64,
        position: u64,
    },
    Wav {
        pcm: Pcm,
        position: usize,
    },
    Device(DeviceInput),
    Frames {
        size: usize,
        per_tick: u32,
    },
    /// What an edge node receives: (publisher, frames), kept for one.
    Subscribe {
        publisher: String,
        from: tokio::sync::mpsc::Receiver<(String, FrameBatch)>,
    },
    /// Everything an edge node receives, decoded and mixed.
    Room {
        mix: Box<RoomMix>,
        from: tokio::sync::mpsc::Receiver<(String, FrameBatch)>,
        /// What arrived this tick (kept: its room is reused).
        arrived: Vec<(String, FrameBatch)>,
    },
}

/// The most blocks a device source hands on in one tick: enough to catch
/// up when the device's clock runs ahead of the pipeline's.
const MAX_DEVICE_BLOCKS: usize = 4;

impl Source {
    /// Builds the source; a WAV source reads and converts its file here.
    pub fn new(config: &SourceConfig, tick: Duration) -> Result<Source, String> {
        let rate = f64::from(SAMPLE_RATE);
        let generator = match &config.kind {
            SourceKind::Tone { frequency, amplitude, channels } => {
                Generator::Tone { step: TAU * frequency / rate, amplitude: *amplitude, channels: *channels, phase: 0.0 }
            }
            SourceKind::Sweep { from, to, period, amplitude, channels } => Generator::Sweep {
                from: *from,
                ratio: to / from,
                period_frames: (period.as_secs_f64() * rate) as u64,
                amplitude: *amplitude,
                channels: *channels,
                phase: 0.0,
                position: 0,
            },
            SourceKind::Wav { path, channels, .. } => Generator::Wav { pcm: wav::load(path, *channels)?, position: 0 },
            SourceKind::Device { device, channels } => Generator::Device(DeviceInput::open(device.as_deref(), *channels)?),
            SourceKind::Frames { size, per_tick } => Generator::Frames { size: *size, per_tick: *per_tick },
            SourceKind::Subscribe { .. } | SourceKind::Room { .. } => {
                return Err(format!("a {} source needs an edge node's media (a [client])", config.kind.name()));
            }
        };
        Ok(Source {
            generator,
            remaining: config.count,
            poison_every: config.poison_every,
            next_sequence: 0,
            frames_per_tick: (tick.as_secs_f64() * rate).round() as usize,
            scratch: Vec::new(),
            spare: None,
        })
    }

    /// A subscribe source: the frames of `publisher` among those the edge
    /// node's media hands over through `from`.
    pub fn subscribe(publisher: &str, from: tokio::sync::mpsc::Receiver<(String, FrameBatch)>) -> Source {
        Source::endless(Generator::Subscribe { publisher: publisher.to_string(), from })
    }

    /// A room source: everyone the edge node's media hands over through
    /// `from`, decoded and mixed into one block of `channels` per `tick`.
    pub fn room(channels: u8, tick: Duration, from: tokio::sync::mpsc::Receiver<(String, FrameBatch)>) -> Source {
        Source::endless(Generator::Room { mix: Box::new(RoomMix::new(channels, tick)), from, arrived: Vec::new() })
    }

    /// A source fed from outside (an edge node's media): no count, no poison.
    fn endless(generator: Generator) -> Source {
        Source { generator, remaining: None, poison_every: None, next_sequence: 0, frames_per_tick: 0, scratch: Vec::new(), spare: None }
    }

    /// A room source's levels and counts.
    pub fn mix_stats(&self) -> Option<std::sync::Arc<MixStats>> {
        match &self.generator {
            Generator::Room { mix, .. } => Some(mix.stats().clone()),
            _ => None,
        }
    }

    /// The next batch, or `None` once the source has ended.
    pub fn produce(&mut self) -> Option<Items> {
        if let Generator::Subscribe { publisher, from } = &mut self.generator {
            return subscribed(publisher, from);
        }
        if let Generator::Room { mix, from, arrived } = &mut self.generator {
            for _ in 0..MAX_ARRIVED {
                match from.try_recv() {
                    Ok(one) => arrived.push(one),
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                    Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
                }
            }
            let mut batch = self.spare.take().unwrap_or_default();
            mix.tick(arrived.drain(..), &mut batch);
            return Some(Items::Audio(batch));
        }
        if let Generator::Frames { size, per_tick } = self.generator {
            return self.frames(size, per_tick);
        }
        if matches!(self.generator, Generator::Device(_)) {
            return self.device_blocks();
        }
        if let Generator::Wav { pcm, position } = &self.generator
            && *position >= pcm.samples.len()
        {
            return None;
        }
        self.take(1)?;
        let channels = self.fill();
        let n = self.frames_per_tick;
        let sequence = self.sequence();
        if self.is_poison(sequence)
            && let Some(first) = self.scratch.first_mut()
        {
            *first = f32::NAN;
        }
        let mut batch = self.spare.take().unwrap_or_default();
        batch.clear();
        let info = BlockInfo { sequence, sample_rate: SAMPLE_RATE, channels, frames: n as u32, level: None };
        batch.push(info, &self.scratch);
        Some(Items::Audio(batch))
    }

    /// Takes a batch from `pool` to fill next, if it has none.
    pub fn take_spare(&mut self, pool: &mut Vec<AudioBatch>) {
        if self.spare.is_none() {
            self.spare = pool.pop();
        }
    }

    /// Makes one tick of audio into `scratch`; returns its channel count.
    fn fill(&mut self) -> u8 {
        let n = self.frames_per_tick;
        self.scratch.clear();
        match &mut self.generator {
            Generator::Tone { step, amplitude, channels, phase } => {
                for _ in 0..n {
                    let v = (*amplitude * phase.sin()) as f32;
                    self.scratch.extend(std::iter::repeat_n(v, usize::from(*channels)));
                    *phase = (*phase + *step) % TAU;
                }
                *channels
            }
            Generator::Sweep { from, ratio, period_frames, amplitude, channels, phase, position } => {
                for _ in 0..n {
                    let v = (*amplitude * phase.sin()) as f32;
                    self.scratch.extend(std::iter::repeat_n(v, usize::from(*channels)));
                    // Exponential sweep: the frequency grows by `ratio` over a period.
                    let t = (*position % (*period_frames).max(1)) as f64 / (*period_frames).max(1) as f64;
                    let frequency = *from * ratio.powf(t);
                    *phase = (*phase + TAU * frequency / f64::from(SAMPLE_RATE)) % TAU;
                    *position += 1;
                }
                *channels
            }
            Generator::Wav { pcm, position } => {
                // The last block is padded with silence: blocks keep one length.
                let want = n * usize::from(pcm.channels);
                let end = (*position + want).min(pcm.samples.len());
                self.scratch.extend_from_slice(&pcm.samples[*position..end]);
                self.scratch.resize(want, 0.0);
                *position = end;
                pcm.channels
            }
            Generator::Device(_) | Generator::Frames { .. } | Generator::Subscribe { .. } | Generator::Room { .. } => 0,
        }
    }

    /// The whole blocks a device has captured since the last tick (none is
    /// fine: the batch is empty and nothing downstream runs this tick).
    fn device_blocks(&mut self) -> Option<Items> {
        let Generator::Device(input) = &mut self.generator else { return None };
        let (channels, block_len) = (input.channels, self.frames_per_tick * usize::from(input.channels));
        self.scratch.clear();
        let blocks = input.read_blocks(block_len, MAX_DEVICE_BLOCKS, &mut self.scratch);
        let mut batch = AudioBatch::new();
        for b in 0..blocks {
            if self.take(1).is_none() {
                return if batch.blocks.is_empty() { None } else { Some(Items::Audio(batch)) };
            }
            let sequence = self.sequence();
            let info = BlockInfo { sequence, sample_rate: SAMPLE_RATE, channels, frames: self.frames_per_tick as u32, level: None };
            batch.push(info, &self.scratch[b * block_len..(b + 1) * block_len]);
        }
        Some(Items::Audio(batch))
    }

    fn frames(&mut self, size: usize, per_tick: u32) -> Option<Items> {
        let n = self.take(u64::from(per_tick))?;
        let mut batch = FrameBatch::new();
        let mut payload = Vec::with_capacity(size);
        for _ in 0..n {
            let sequence = self.sequence();
            payload.clear();
            payload.extend((0..size).map(|i| (sequence as usize + i) as u8));
            if self.is_poison(sequence) {
                let n = POISON.len().min(size);
                payload[..n].copy_from_slice(&POISON[..n]);
            }
            batch.push(FrameInfo { stream: 0, sequence, timestamp: sequence * 960, size: 0 }, &payload);
        }
        Some(Items::Frames(batch))
    }

    /// Takes up to `want` items from the count; `None` when none are left.
    fn take(&mut self, want: u64) -> Option<u64> {
        match &mut self.remaining {
            None => Some(want),
            Some(0) => None,
            Some(left) => {
                let n = want.min(*left);
                *left -= n;
                Some(n)
            }
        }
    }

    fn sequence(&mut self) -> u64 {
        let s = self.next_sequence;
        self.next_sequence += 1;
        s
    }

    fn is_poison(&self, sequence: u64) -> bool {
        self.poison_every.is_some_and(|n| sequence % n == n - 1)
    }
}

/// The most packets a subscribe or room source takes in one tick: a
/// backlog beyond that waits for the next.
const MAX_ARRIVED: usize = 256;

/// Whatever arrived from `publisher` since the last tick.
fn subscribed(publisher: &str, from: &mut tokio::sync::mpsc::Receiver<(String, FrameBatch)>) -> Option<Items> {
    let mut out = FrameBatch { frames: Vec::new(), payloads: Vec::new() };
    for _ in 0..MAX_ARRIVED {
        match from.try_recv() {
            Ok((who, batch)) if who == publisher => {
                out.frames.extend(batch.frames);
                out.payloads.extend(batch.payloads);
            }
            Ok(_) => {}
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return None,
        }
    }
    Some(Items::Frames(out))
}
