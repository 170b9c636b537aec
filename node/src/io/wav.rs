//! WAV files in and out, in the node's format: 48 kHz, f32, interleaved.
//!
//! Reading converts any PCM or float WAV (8/16/24/32-bit integer, 32-bit
//! float) to f32, mixes or spreads channels to the count asked for, and
//! resamples to 48 kHz with rubato's FFT resampler (a fixed ratio, so the
//! synchronous resampler: fast and of high quality). The whole file is
//! converted when the pipeline is built, so producing a block later is a
//! copy. Writing stores 32-bit float (exact) or 16-bit integer samples.

use super::SAMPLE_RATE;
pub use medianode_core::config::WavFormat;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

/// A WAV file converted to the node's format.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub channels: u8,
    /// Interleaved 48 kHz samples.
    pub samples: Vec<f32>,
}

/// What a WAV file holds, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WavInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bits: u16,
    pub float: bool,
}

/// Reads just the header: cheap, for config checks.
pub fn probe(path: &Path) -> Result<WavInfo, String> {
    let reader = hound::WavReader::open(path).map_err(|e| format!("cannot read WAV file {}: {e}", path.display()))?;
    let spec = reader.spec();
    Ok(WavInfo {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        bits: spec.bits_per_sample,
        float: spec.sample_format == hound::SampleFormat::Float,
    })
}

/// Reads a WAV file as 48 kHz f32 with `channels` channels (the file's own
/// count when `None`).
pub fn load(path: &Path, channels: Option<u8>) -> Result<Pcm, String> {
    let reader = hound::WavReader::open(path).map_err(|e| format!("cannot read WAV file {}: {e}", path.display()))?;
    let spec = reader.spec();
    let bad = |e: hound::Error| format!("bad WAV data in {}: {e}", path.display());
    let samples: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => reader.into_samples::<f32>().collect::<Result<_, _>>().map_err(bad)?,
        (hound::SampleFormat::Int, bits @ 1..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader.into_samples::<i32>().map(|s| s.map(|s| s as f32 * scale)).collect::<Result<_, _>>().map_err(bad)?
        }
        (format, bits) => return Err(format!("{}: {bits}-bit {format:?} WAV is not supported", path.display())),
    };
    let from = usize::from(spec.channels.max(1));
    let to = channels.map_or(from, usize::from);
    let mixed = convert_channels(&samples, from, to)
        .ok_or_else(|| format!("cannot turn {from} channels into {to}; use channels = 1, or the file's own count"))?;
    let resampled = resample(&mixed, to, spec.sample_rate)?;
    Ok(Pcm { channels: to as u8, samples: resampled })
}

/// Mixes down to mono (average), spreads mono to every channel, or keeps
/// the layout; other conversions have no obvious meaning.
fn convert_channels(samples: &[f32], from: usize, to: usize) -> Option<Vec<f32>> {
    match (from, to) {
        (a, b) if a == b => Some(samples.to_vec()),
        (_, 1) => Some(samples.chunks_exact(from).map(|f| f.iter().sum::<f32>() / from as f32).collect()),
        (1, _) => Some(samples.iter().flat_map(|&s| std::iter::repeat_n(s, to)).collect()),
        _ => None,
    }
}

/// Resamples interleaved audio to 48 kHz (a copy when it already is).
fn resample(samples: &[f32], channels: usize, rate: u32) -> Result<Vec<f32>, String> {
    if rate == SAMPLE_RATE || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let frames = samples.len() / channels;
    let mut resampler = Fft::<f32>::new(rate as usize, SAMPLE_RATE as usize, 1024, channels, FixedSync::Input)
        .map_err(|e| format!("cannot resample from {rate} Hz: {e}"))?;
    let input = InterleavedSlice::new(samples, channels, frames).map_err(|e| format!("resampler input: {e}"))?;
    let output = resampler.process_all(&input, frames, None).map_err(|e| format!("resampling failed: {e}"))?;
    Ok(output.take_data())
}

/// Writes blocks to a WAV file as they arrive; the header is completed by
/// [`WavWriter::finish`] (or, failing that, when dropped).
pub struct WavWriter {
    path: std::path::PathBuf,
    format: WavFormat,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    channels: u8,
    /// The first error, reported once.
    pub error: Option<String>,
}

impl WavWriter {
    pub fn new(path: &Path, format: WavFormat) -> WavWriter {
        WavWriter { path: path.to_path_buf(), format, writer: None, channels: 0, error: None }
    }

    /// Appends interleaved samples; the first call fixes the channel count.
    pub fn write(&mut self, channels: u8, samples: &[f32]) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.try_write(channels, samples) {
            tracing::error!(path = %self.path.display(), error = %e, "WAV sink failed; its output stops here");
            self.error = Some(e);
        }
    }

    fn try_write(&mut self, channels: u8, samples: &[f32]) -> Result<(), String> {
        if self.writer.is_none() {
            let spec = hound::WavSpec {
                channels: u16::from(channels),
                sample_rate: SAMPLE_RATE,
                bits_per_sample: if self.format == WavFormat::F32 { 32 } else { 16 },
                sample_format: if self.format == WavFormat::F32 { hound::SampleFormat::Float } else { hound::SampleFormat::Int },
            };
            let writer = hound::WavWriter::create(&self.path, spec).map_err(|e| format!("cannot create {}: {e}", self.path.display()))?;
            self.writer = Some(writer);
            self.channels = channels;
        }
        if channels != self.channels {
            return Err(format!("blocks changed from {} to {channels} channels", self.channels));
        }
        let path = &self.path;
        let Some(writer) = self.writer.as_mut() else { return Ok(()) };
        let io = |e: hound::Error| format!("cannot write {}: {e}", path.display());
        match self.format {
            WavFormat::F32 => samples.iter().try_for_each(|&s| writer.write_sample(s)).map_err(io),
            WavFormat::S16 => {
                samples.iter().try_for_each(|&s| writer.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)).map_err(io)
            }
        }
    }

    /// Completes the file's header.
    pub fn finish(&mut self) -> Result<(), String> {
        match self.writer.take() {
            Some(writer) => writer.finalize().map_err(|e| format!("cannot finish {}: {e}", self.path.display())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_44k1_stereo_file_becomes_48k_mono_at_the_same_pitch_and_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.wav");
        let spec = hound::WavSpec { channels: 2, sample_rate: 44_100, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..44_100 {
            let s = (0.5 * (std::f64::consts::TAU * 1000.0 * f64::from(i) / 44_100.0).sin() * 32767.0) as i16;
            w.write_sample(s).unwrap();
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();

        let pcm = load(&path, Some(1)).unwrap();
        assert_eq!(pcm.channels, 1);
        assert!((pcm.samples.len() as i64 - 48_000).abs() <= 2, "{} frames", pcm.samples.len());
        // Zero crossings in the middle second: 1000 Hz gives 2 per period.
        let middle = &pcm.samples[4800..43_200];
        let crossings = middle.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        assert!((crossings as i64 - 1600).abs() <= 2, "{crossings} crossings in 0.8 s");
        let peak = middle.iter().fold(0f32, |m, s| m.max(s.abs()));
        assert!((peak - 0.5).abs() < 0.01, "peak {peak}");
    }
}
