//! Generated sources: a sine tone and numbered frames.
//!
//! Both can mark every Nth item as poison (a NaN sample, or a payload that
//! starts with `poison`), which is how tests and demos exercise quarantine.

use super::SAMPLE_RATE;
use crate::config::{SourceConfig, SourceKind};
use crate::runtime::Items;
use crate::runtime::bindings::{AudioBatch, BlockInfo, FrameBatch, FrameInfo};
use std::f64::consts::TAU;
use std::time::Duration;

/// Marks a poison frame.
pub const POISON: &[u8] = b"poison";

/// A source: one batch per tick until its count runs out.
pub struct Source {
    kind: SourceKind,
    /// Items still to make; `None` = endless.
    remaining: Option<u64>,
    poison_every: Option<u64>,
    next_sequence: u64,
    /// Tone phase in radians.
    phase: f64,
    /// Frames per channel in one tick.
    frames_per_tick: usize,
}

impl Source {
    pub fn new(config: &SourceConfig, tick: Duration) -> Source {
        Source {
            kind: config.kind.clone(),
            remaining: config.count,
            poison_every: config.poison_every,
            next_sequence: 0,
            phase: 0.0,
            frames_per_tick: (tick.as_secs_f64() * SAMPLE_RATE as f64).round() as usize,
        }
    }

    /// The next batch, or `None` once the source has ended.
    pub fn next(&mut self) -> Option<Items> {
        match self.kind {
            SourceKind::Tone { frequency, amplitude, channels } => {
                self.take(1)?;
                let sequence = self.sequence();
                let mut samples = Vec::with_capacity(self.frames_per_tick * channels as usize);
                let step = TAU * frequency / SAMPLE_RATE as f64;
                for _ in 0..self.frames_per_tick {
                    let v = (amplitude * self.phase.sin()) as f32;
                    samples.extend(std::iter::repeat_n(v, channels as usize));
                    self.phase = (self.phase + step) % TAU;
                }
                if self.is_poison(sequence) && let Some(first) = samples.first_mut() {
                    *first = f32::NAN;
                }
                let mut batch = AudioBatch::new();
                batch.push(BlockInfo { sequence, sample_rate: SAMPLE_RATE, channels, frames: 0, level: None }, &samples);
                Some(Items::Audio(batch))
            }
            SourceKind::Frames { size, per_tick } => {
                let n = self.take(per_tick as u64)?;
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
        }
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
