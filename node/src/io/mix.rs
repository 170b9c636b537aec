//! The `room` source: everyone an edge node hears, as one audio stream.
//!
//! The edge's media hands over each publisher's frames, opened by its E2EE
//! stage (`(publisher, frames)`). Every tick the mixer:
//!
//! 1. decodes each publisher's Opus with a decoder of its own (a *voice*:
//!    losses concealed, as the `opus-decoder` stage does) into that
//!    voice's buffer;
//! 2. takes one tick of audio from each voice that is playing, sums them
//!    and runs the sum through a peak limiter, so that three loud talkers
//!    never clip;
//! 3. measures each voice's level (RMS over the last second, dBFS), for
//!    the log and `/metrics` ([`MixStats`]).
//!
//! Publishers send at their own pace over a network, so a voice's buffer
//! is a small jitter buffer: a voice starts playing once it holds
//! [`PREBUFFER`] of audio, falls back to buffering when it runs dry (an
//! underrun, counted), and never holds more than [`MAX_BUFFERED`] (the
//! oldest audio goes, counted). A voice that sends nothing for
//! [`FORGET_AFTER`] is forgotten; at most [`MAX_VOICES`] are mixed, and
//! frames of any further publisher are refused and counted. Publishers are
//! other people's machines: nothing they send can grow the node.
//!
//! The mixer is sans-IO: [`RoomMix::tick`] takes what arrived and returns
//! one block; the source around it only drains the channel.

use super::SAMPLE_RATE;
use crate::builtin::opus::{DecoderConfig, OpusDecoder};
use crate::runtime::AudioBatch;
use crate::runtime::bindings::{BlockInfo, FrameBatch};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Audio a voice holds before it plays (rides out network jitter).
pub const PREBUFFER: Duration = Duration::from_millis(40);
/// The most audio a voice holds: beyond it the oldest is dropped.
pub const MAX_BUFFERED: Duration = Duration::from_millis(200);
/// A voice silent this long is forgotten (its decoder freed).
pub const FORGET_AFTER: Duration = Duration::from_secs(5);
/// The most publishers mixed at once.
pub const MAX_VOICES: usize = 32;
/// The limiter's ceiling: -1 dBFS.
const CEILING: f32 = 0.891;
/// The limiter lets go of a peak with this time constant.
const RELEASE: Duration = Duration::from_millis(50);
/// How often the voices' levels are logged.
const LOG_EVERY: Duration = Duration::from_secs(5);
/// A sequence number this far behind a voice's last means its publisher
/// started again (a rejoin): it gets a fresh decoder.
const RESTARTED_BEHIND: u64 = 100;

/// What the mixer did, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct MixStats {
    /// The voices mixed now, with their levels.
    pub voices: Mutex<Vec<VoiceLevel>>,
    /// Frames from publishers past [`MAX_VOICES`].
    pub refused_frames: AtomicU64,
    /// Times a playing voice ran dry.
    pub underruns: AtomicU64,
    /// Samples dropped from voices that had more than [`MAX_BUFFERED`].
    pub overflow_samples: AtomicU64,
    /// Blocks the limiter turned down.
    pub limited_blocks: AtomicU64,
}

/// One voice's level.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceLevel {
    pub publisher: String,
    /// RMS over the last second, dBFS (-120 for silence).
    pub level_dbfs: f64,
    /// Frames received from it.
    pub frames: u64,
}

impl MixStats {
    /// The voices mixed now.
    pub fn levels(&self) -> Vec<VoiceLevel> {
        crate::runtime::lock(&self.voices).clone()
    }
}

/// One publisher in the mix.
struct Voice {
    publisher: String,
    decoder: OpusDecoder,
    /// The last sequence number decoded.
    last: Option<u64>,
    buffered: VecDeque<f32>,
    playing: bool,
    /// Ticks since its last frame.
    idle_ticks: u64,
    frames: u64,
    /// The level meter: squares summed over the current window.
    energy: f64,
    samples: u64,
    level_dbfs: f64,
}

/// The mixer ([`RoomMix::tick`] once per tick).
pub struct RoomMix {
    channels: u8,
    /// Samples (all channels) in one tick.
    tick_len: usize,
    voices: Vec<Voice>,
    /// The limiter's envelope, and its release factor per sample frame.
    envelope: f32,
    release: f32,
    sequence: u64,
    /// Thresholds, in ticks.
    prebuffer: usize,
    max_buffered: usize,
    forget_after: u64,
    level_window: u64,
    log_every: u64,
    sum: Vec<f32>,
    /// A voice's audio as decoded, before it joins the voice's buffer.
    decoded: AudioBatch,
    stats: std::sync::Arc<MixStats>,
}

impl RoomMix {
    /// A mixer of `channels` that makes one block of `tick` per call.
    pub fn new(channels: u8, tick: Duration) -> RoomMix {
        let frames = (tick.as_secs_f64() * f64::from(SAMPLE_RATE)).round().max(1.0) as usize;
        let samples = |d: Duration| (d.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize * usize::from(channels);
        let ticks = |d: Duration| (d.as_secs_f64() / tick.as_secs_f64().max(1e-6)).ceil().max(1.0) as u64;
        RoomMix {
            channels,
            tick_len: frames * usize::from(channels),
            voices: Vec::new(),
            envelope: 0.0,
            release: (-1.0 / (RELEASE.as_secs_f64() * f64::from(SAMPLE_RATE))).exp() as f32,
            sequence: 0,
            prebuffer: samples(PREBUFFER),
            max_buffered: samples(MAX_BUFFERED),
            forget_after: ticks(FORGET_AFTER),
            level_window: ticks(Duration::from_secs(1)),
            log_every: ticks(LOG_EVERY),
            sum: Vec::new(),
            decoded: AudioBatch::new(),
            stats: Default::default(),
        }
    }

    pub fn stats(&self) -> &std::sync::Arc<MixStats> {
        &self.stats
    }

    /// Takes what arrived since the last tick and writes the tick's mix
    /// to `out` (cleared first: a batch reused tick after tick, so the
    /// mixer allocates nothing once its buffers have grown).
    pub fn tick(&mut self, arrived: impl IntoIterator<Item = (String, FrameBatch)>, out: &mut AudioBatch) {
        for voice in &mut self.voices {
            voice.idle_ticks += 1;
        }
        for (publisher, frames) in arrived {
            self.decode(publisher, frames);
        }
        self.voices.retain(|v| v.idle_ticks < self.forget_after);

        self.sum.clear();
        self.sum.resize(self.tick_len, 0.0);
        for voice in &mut self.voices {
            if !voice.playing && voice.buffered.len() >= self.prebuffer.max(self.tick_len) {
                voice.playing = true;
            }
            if voice.playing {
                let n = self.tick_len.min(voice.buffered.len());
                for (sum, sample) in self.sum.iter_mut().zip(voice.buffered.drain(..n)) {
                    *sum += sample;
                    voice.energy += f64::from(sample) * f64::from(sample);
                }
                if n < self.tick_len {
                    voice.playing = false;
                    self.stats.underruns.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A voice that is buffering counts as silent for its level.
            voice.samples += self.tick_len as u64;
        }
        if self.limit() {
            self.stats.limited_blocks.fetch_add(1, Ordering::Relaxed);
        }
        self.sequence += 1;
        self.measure();
        out.clear();
        let frames = (self.tick_len / usize::from(self.channels)) as u32;
        let info = BlockInfo { sequence: self.sequence - 1, sample_rate: SAMPLE_RATE, channels: self.channels, frames, level: None };
        out.push(info, &self.sum);
    }

    /// Decodes one publisher's frames into its voice's buffer.
    fn decode(&mut self, publisher: String, frames: FrameBatch) {
        let index = match self.voices.iter().position(|v| v.publisher == publisher) {
            Some(i) => i,
            None if self.voices.len() >= MAX_VOICES => {
                self.stats.refused_frames.fetch_add(frames.frames.len() as u64, Ordering::Relaxed);
                return;
            }
            None => match self.voice(publisher) {
                Some(voice) => {
                    self.voices.push(voice);
                    self.voices.len() - 1
                }
                None => return,
            },
        };
        let (channels, max_buffered) = (self.channels, self.max_buffered);
        let voice = &mut self.voices[index];
        voice.idle_ticks = 0;
        voice.frames += frames.frames.len() as u64;
        let restarted = match (voice.last, frames.frames.first()) {
            (Some(last), Some(first)) => first.sequence + RESTARTED_BEHIND < last,
            _ => false,
        };
        if restarted && let Ok(decoder) = OpusDecoder::new(&DecoderConfig { channels, ..Default::default() }) {
            voice.decoder = decoder;
        }
        voice.last = frames.frames.last().map(|f| f.sequence).or(voice.last);
        self.decoded.clear();
        voice.decoder.decode_into(&frames, &mut self.decoded);
        voice.buffered.extend(self.decoded.pcm());
        if voice.buffered.len() > max_buffered {
            let over = voice.buffered.len() - max_buffered;
            voice.buffered.drain(..over);
            self.stats.overflow_samples.fetch_add(over as u64, Ordering::Relaxed);
        }
    }

    fn voice(&self, publisher: String) -> Option<Voice> {
        match OpusDecoder::new(&DecoderConfig { channels: self.channels, ..Default::default() }) {
            Ok(decoder) => Some(Voice {
                publisher,
                decoder,
                last: None,
                buffered: VecDeque::new(),
                playing: false,
                idle_ticks: 0,
                frames: 0,
                energy: 0.0,
                samples: 0,
                level_dbfs: -120.0,
            }),
            Err(e) => {
                tracing::error!("room mix: no decoder for {publisher}: {e}");
                None
            }
        }
    }

    /// A peak limiter: the gain follows the sum's envelope (instant
    /// attack, [`RELEASE`]), so no sample leaves above [`CEILING`].
    /// Returns whether it turned anything down.
    fn limit(&mut self) -> bool {
        let channels = usize::from(self.channels);
        let mut limited = false;
        for frame in self.sum.chunks_mut(channels) {
            let peak = frame.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            self.envelope = peak.max(self.envelope * self.release);
            if self.envelope > CEILING {
                let gain = CEILING / self.envelope;
                frame.iter_mut().for_each(|s| *s *= gain);
                limited = true;
            }
        }
        limited
    }

    /// Closes each voice's level window once a second; logs every few.
    fn measure(&mut self) {
        if !self.sequence.is_multiple_of(self.level_window) {
            return;
        }
        for voice in &mut self.voices {
            let mean = voice.energy / voice.samples.max(1) as f64;
            voice.level_dbfs = if mean > 1e-12 { 10.0 * mean.log10() } else { -120.0 };
            (voice.energy, voice.samples) = (0.0, 0);
        }
        let levels: Vec<VoiceLevel> =
            self.voices.iter().map(|v| VoiceLevel { publisher: v.publisher.clone(), level_dbfs: v.level_dbfs, frames: v.frames }).collect();
        if self.sequence.is_multiple_of(self.log_every) && !levels.is_empty() {
            let text: Vec<String> = levels.iter().map(|l| format!("{} {:.1} dBFS", l.publisher, l.level_dbfs)).collect();
            tracing::info!(voices = levels.len(), "room mix levels: {}", text.join(", "));
        }
        *crate::runtime::lock(&self.stats.voices) = levels;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::BuiltinStage;
    use crate::builtin::opus::{EncoderConfig, OpusEncoder};
    use crate::runtime::Items;

    const TICK: Duration = Duration::from_millis(10);

    /// A publisher: a tone, Opus-encoded one 10 ms block at a time.
    struct Talker {
        encoder: OpusEncoder,
        frequency: f32,
        amplitude: f32,
        sequence: u64,
    }

    impl Talker {
        fn new(frequency: f32, amplitude: f32) -> Talker {
            Talker { encoder: OpusEncoder::new(&EncoderConfig::default()).expect("encoder"), frequency, amplitude, sequence: 0 }
        }

        fn frame(&mut self) -> FrameBatch {
            let start = self.sequence * 480;
            let samples: Vec<f32> =
                (0..480).map(|i| self.amplitude * (std::f32::consts::TAU * self.frequency * (start + i) as f32 / 48_000.0).sin()).collect();
            let mut block = AudioBatch::new();
            block.push(BlockInfo { sequence: self.sequence, sample_rate: SAMPLE_RATE, channels: 1, frames: 480, level: None }, &samples);
            self.sequence += 1;
            match self.encoder.process(Items::Audio(block)) {
                Items::Frames(frames) => frames,
                Items::Audio(_) => panic!("frames expected"),
            }
        }
    }

    /// One tick of `mix`, as samples.
    fn tick(mix: &mut RoomMix, arrived: impl IntoIterator<Item = (String, FrameBatch)>) -> Vec<f32> {
        let mut out = AudioBatch::new();
        mix.tick(arrived, &mut out);
        out.pcm().to_vec()
    }

    /// The power of `frequency` in `samples` (Goertzel), normalized.
    fn power(samples: &[f32], frequency: f32) -> f64 {
        let w = std::f64::consts::TAU * f64::from(frequency) / 48_000.0;
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
            (s2, s1) = (s1, s);
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (samples.len() as f64).powi(2)
    }

    #[test]
    fn three_loud_talkers_are_all_heard_and_the_mix_never_clips() {
        let mut mix = RoomMix::new(1, TICK);
        let mut talkers = [Talker::new(400.0, 0.8), Talker::new(1000.0, 0.8), Talker::new(2500.0, 0.8)];
        let mut out = Vec::new();
        for _ in 0..200 {
            let arrived: Vec<_> = talkers.iter_mut().enumerate().map(|(i, t)| (format!("p{i}"), t.frame())).collect();
            out.extend(tick(&mut mix, arrived));
        }
        assert_eq!(out.len(), 200 * 480, "one block per tick");
        let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak <= CEILING + 1e-6, "peak {peak}");
        assert!(mix.stats().limited_blocks.load(Ordering::Relaxed) > 0);
        let tail = &out[out.len() - 48_000..];
        let off = [700.0, 1700.0, 3300.0].map(|f| power(tail, f)).into_iter().fold(0.0, f64::max);
        for f in [400.0, 1000.0, 2500.0] {
            assert!(power(tail, f) > 100.0 * off, "{f} Hz: {} vs off-tone {off}", power(tail, f));
        }
        let levels = mix.stats().levels();
        assert_eq!(levels.len(), 3);
        for level in &levels {
            // A 0.8 sine is -4.9 dBFS RMS; Opus keeps it within a dB or two.
            assert!((-8.0..-3.0).contains(&level.level_dbfs), "{level:?}");
        }
    }

    #[test]
    fn a_voice_that_stops_is_forgotten_and_its_level_goes() {
        let mut mix = RoomMix::new(1, TICK);
        let (mut a, mut b) = (Talker::new(400.0, 0.3), Talker::new(1000.0, 0.3));
        for _ in 0..100 {
            tick(&mut mix, [("a".to_string(), a.frame()), ("b".to_string(), b.frame())]);
        }
        assert_eq!(mix.stats().levels().len(), 2);
        let ticks = (FORGET_AFTER.as_millis() / TICK.as_millis()) as usize + 100;
        for _ in 0..ticks {
            tick(&mut mix, [("a".to_string(), a.frame())]);
        }
        let levels = mix.stats().levels();
        assert_eq!(levels.iter().map(|l| l.publisher.as_str()).collect::<Vec<_>>(), ["a"]);
        // b ran dry once when it stopped.
        assert_eq!(mix.stats().underruns.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_flood_of_publishers_and_frames_cannot_grow_the_mixer() {
        let mut mix = RoomMix::new(1, TICK);
        let mut talker = Talker::new(400.0, 0.3);
        let frame = talker.frame();
        // A hundred publishers at once: 32 voices, the rest refused.
        tick(&mut mix, (0..100).map(|i| (format!("p{i}"), frame.clone())));
        assert_eq!(mix.voices.len(), MAX_VOICES);
        assert_eq!(mix.stats().refused_frames.load(Ordering::Relaxed), 68);
        // One publisher sending a second of audio in one tick: it keeps 200 ms.
        let burst: Vec<_> = (0..100).map(|_| ("p0".to_string(), talker.frame())).collect();
        tick(&mut mix, burst);
        assert!(mix.voices[0].buffered.len() <= mix.max_buffered);
        assert!(mix.stats().overflow_samples.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn a_publisher_that_starts_again_is_heard_again() {
        let mut mix = RoomMix::new(1, TICK);
        let mut talker = Talker::new(400.0, 0.3);
        for _ in 0..1000 {
            tick(&mut mix, [("a".to_string(), talker.frame())]);
        }
        // A rejoin: its sequence numbers start from zero.
        let mut again = Talker::new(400.0, 0.3);
        let mut out = Vec::new();
        for _ in 0..100 {
            out.extend(tick(&mut mix, [("a".to_string(), again.frame())]));
        }
        let energy: f32 = out[out.len() - 4800..].iter().map(|s| s * s).sum();
        assert!(energy > 10.0, "heard after the restart: energy {energy}");
    }

    #[test]
    fn nobody_in_the_room_is_silence_one_block_per_tick() {
        let mut mix = RoomMix::new(2, TICK);
        let out = tick(&mut mix, std::iter::empty());
        assert_eq!(out.len(), 960);
        assert!(out.iter().all(|s| *s == 0.0));
    }
}
