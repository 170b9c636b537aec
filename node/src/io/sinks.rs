//! Sinks: a level meter that logs, a WAV file, a counter, and a channel to
//! in-process readers. Every sink counts what it received and the sequence gaps it saw,
//! which is how a user (or a test) sees what a fault cost.

use super::device::DeviceOutput;
use super::wav::WavWriter;
use crate::runtime::bindings::FrameBatch;
use crate::runtime::{Items, lock};
use medianode_core::config::{Pace, SinkConfig, SinkKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// What a sink has seen so far.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SinkCounts {
    /// Items received.
    pub items: u64,
    /// Items missing between the sequence numbers received.
    pub missing: u64,
    /// Items that arrived with a sequence at or below one already seen.
    pub out_of_order: u64,
    /// Batches dropped because their reader was too slow to take them: a
    /// channel's reader, or a WAV file's disk under `pace = "realtime"`
    /// (counted per block).
    pub overflowed: u64,
}

/// Shared, readable while the pipeline runs.
#[derive(Debug, Default)]
pub struct SinkStats {
    counts: Mutex<SinkCounts>,
}

impl SinkStats {
    pub fn get(&self) -> SinkCounts {
        lock(&self.counts).clone()
    }
}

pub struct Sink {
    id: String,
    stats: Arc<SinkStats>,
    next_sequence: Option<u64>,
    kind: Output,
}

enum Output {
    Meter(Meter),
    Null,
    Channel(mpsc::Sender<Items>),
    Wav(WavWriter),
    Device(DeviceOutput),
    /// To an edge node's media (see [`Sink::publish`]).
    Publish(mpsc::Sender<FrameBatch>),
}

/// Accumulates audio level over a report period.
struct Meter {
    report_every: Duration,
    /// Stream time accumulated since the last report.
    period: Duration,
    blocks: u64,
    missing_at_start: u64,
    sum_squares: f64,
    samples: u64,
    peak: f32,
}

impl Sink {
    /// Creates the sink (a device sink opens its device); a channel sink
    /// also returns its reader. Under `pace = "asap"` a WAV file is waited
    /// for; under `realtime` what it cannot take in time is dropped.
    pub fn new(config: &SinkConfig, pace: Pace) -> Result<(Sink, Option<mpsc::Receiver<Items>>), String> {
        let (kind, reader) = match &config.kind {
            SinkKind::Meter { report_every } => (Output::Meter(Meter { report_every: *report_every, ..Meter::zero() }), None),
            SinkKind::Null => (Output::Null, None),
            SinkKind::Wav { path, format } => (Output::Wav(WavWriter::new(path, *format, pace == Pace::Asap)), None),
            SinkKind::Device { device, channels } => (Output::Device(DeviceOutput::open(device.as_deref(), *channels)?), None),
            SinkKind::Channel { capacity } => {
                let (tx, rx) = mpsc::channel((*capacity).max(1));
                (Output::Channel(tx), Some(rx))
            }
            SinkKind::Publish => return Err("a publish sink needs an edge node's media (a [client])".into()),
        };
        let sink = Sink { id: config.id.clone(), stats: Arc::default(), next_sequence: None, kind };
        Ok((sink, reader))
    }

    /// A publish sink: frames go to the edge node's media through `to`.
    pub fn publish(config: &SinkConfig, to: mpsc::Sender<FrameBatch>) -> Sink {
        Sink { id: config.id.clone(), stats: Arc::default(), next_sequence: None, kind: Output::Publish(to) }
    }

    pub fn stats(&self) -> &Arc<SinkStats> {
        &self.stats
    }

    /// Takes a tick's items; hands them back when it is done with them
    /// (all sinks but the channel and publish sinks, which pass them on),
    /// so that the pipeline can reuse their buffers.
    pub fn deliver(&mut self, items: Items) -> Option<Items> {
        {
            let mut counts = lock(&self.stats.counts);
            counts.items += items.len() as u64;
            for sequence in items.sequences() {
                match self.next_sequence {
                    Some(next) if sequence > next => counts.missing += sequence - next,
                    Some(next) if sequence < next => counts.out_of_order += 1,
                    _ => {}
                }
                self.next_sequence = Some(self.next_sequence.map_or(sequence + 1, |n| n.max(sequence + 1)));
            }
        }
        match &mut self.kind {
            Output::Meter(meter) => meter.add(&self.id, &items, &self.stats),
            Output::Null => {}
            Output::Channel(tx) => {
                if tx.try_send(items).is_err() {
                    lock(&self.stats.counts).overflowed += 1;
                }
                return None;
            }
            Output::Publish(tx) => {
                if let Items::Frames(batch) = items
                    && tx.try_send(batch).is_err()
                {
                    lock(&self.stats.counts).overflowed += 1;
                }
                return None;
            }
            Output::Wav(writer) => {
                if let Items::Audio(batch) = &items {
                    let dropped = batch.iter().filter(|(info, samples)| !writer.write(info.channels, samples)).count();
                    if dropped > 0 {
                        lock(&self.stats.counts).overflowed += dropped as u64;
                    }
                }
            }
            Output::Device(device) => {
                if let Items::Audio(batch) = &items {
                    for (info, samples) in batch.iter() {
                        device.write(info.channels, samples);
                    }
                }
            }
        }
        Some(items)
    }

    /// Completes what the sink writes once the pipeline stops: a WAV file's
    /// header; the last queued audio of a device (waiting 2 s at most).
    pub fn finish(&mut self) {
        match &mut self.kind {
            Output::Wav(writer) => {
                if let Err(e) = writer.finish() {
                    tracing::error!(sink = %self.id, error = %e, "WAV sink could not finish its file");
                }
            }
            Output::Device(device) => device.drain(std::time::Duration::from_secs(2)),
            _ => {}
        }
    }
}

impl Meter {
    fn add(&mut self, id: &str, items: &Items, stats: &SinkStats) {
        let Items::Audio(batch) = items else { return };
        for (block, samples) in batch.iter() {
            for &s in samples {
                if s.is_finite() {
                    self.sum_squares += f64::from(s) * f64::from(s);
                    self.peak = self.peak.max(s.abs());
                }
            }
            self.samples += samples.len() as u64;
            self.blocks += 1;
            self.period += Duration::from_secs_f64(f64::from(block.frames) / f64::from(block.sample_rate.max(1)));
        }
        if self.period >= self.report_every {
            let missing = stats.get().missing;
            let rms = (self.sum_squares / self.samples.max(1) as f64).sqrt();
            tracing::info!(
                sink = id,
                blocks = self.blocks,
                missing = missing - self.missing_at_start,
                rms_dbfs = format!("{:.1}", dbfs(rms)),
                peak_dbfs = format!("{:.1}", dbfs(f64::from(self.peak))),
                "meter"
            );
            *self = Meter { report_every: self.report_every, missing_at_start: missing, ..Meter::zero() };
        }
    }

    fn zero() -> Meter {
        Meter {
            report_every: Duration::ZERO,
            period: Duration::ZERO,
            blocks: 0,
            missing_at_start: 0,
            sum_squares: 0.0,
            samples: 0,
            peak: 0.0,
        }
    }
}

fn dbfs(level: f64) -> f64 {
    if level > 0.0 { 20.0 * level.log10() } else { f64::NEG_INFINITY }
}
