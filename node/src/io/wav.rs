//! WAV files in and out, in the node's format: 48 kHz, f32, interleaved.
//!
//! Reading converts any PCM or float WAV (8/16/24/32-bit integer, 32-bit
//! float) to f32, mixes or spreads channels to the count asked for, and
//! resamples to 48 kHz with rubato's FFT resampler (a fixed ratio, so the
//! synchronous resampler: fast and of high quality). The whole file is
//! converted when the pipeline is built, so producing a block later is a
//! copy. Writing stores 32-bit float (exact) or 16-bit integer samples,
//! on a thread of the file's own ([`WavWriter`]): a disk that stalls must
//! not stall the pipeline's driver thread, which has a tick to keep.

use super::SAMPLE_RATE;
pub use medianode_core::config::WavFormat;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

/// Audio waiting for a WAV file's writer thread, at most: 4 MiB, 11 s of
/// stereo f32. Past it a realtime pipeline's blocks are dropped (and
/// counted); an `asap` one waits for the disk.
pub const QUEUE_BYTES: usize = 4 << 20;

/// How long [`WavWriter::finish`] waits, under `realtime`, for the writer to
/// empty its queue and complete the header.
const FINISH_WAIT: Duration = Duration::from_secs(2);

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

/// Writes blocks to a WAV file on a thread of its own, so that a slow or
/// stalled disk delays only the file. The queue is bounded in bytes
/// ([`QUEUE_BYTES`]): when it is full, [`WavWriter::write`] drops the block
/// (`wait = false`, a realtime pipeline) or waits for room (`wait = true`,
/// an `asap` pipeline, where every sample must reach the file). Buffers
/// come back from the writer for reuse, so a steady stream allocates
/// nothing.
pub struct WavWriter {
    path: PathBuf,
    /// To the writer; `None` once finished.
    blocks: Option<Sender<Block>>,
    /// Written buffers, back from the writer; each also says there is room.
    spare: Receiver<Vec<f32>>,
    spares: Vec<Vec<f32>>,
    /// Bytes sent and not yet written.
    queued: Arc<AtomicUsize>,
    wait: bool,
    /// The writer's result, once it has completed the file.
    finished: Receiver<Result<(), String>>,
}

struct Block {
    channels: u8,
    samples: Vec<f32>,
}

impl WavWriter {
    /// Starts the writer thread; the file is created by its first block.
    pub fn new(path: &Path, format: WavFormat, wait: bool) -> WavWriter {
        let (blocks_tx, blocks_rx) = mpsc::channel::<Block>();
        let (spare_tx, spare) = mpsc::channel();
        let (finished_tx, finished) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let mut file = WavFile::new(path, format);
        let counter = queued.clone();
        let spawned = std::thread::Builder::new().name("wav-writer".into()).spawn(move || {
            for block in blocks_rx {
                file.write(block.channels, &block.samples);
                counter.fetch_sub(block.samples.len() * 4, Ordering::Relaxed);
                let _ = spare_tx.send(block.samples);
            }
            let _ = finished_tx.send(file.finish());
        });
        let blocks = match spawned {
            Ok(_) => Some(blocks_tx),
            Err(e) => {
                tracing::error!(path = %path.display(), "WAV sink has no writer thread, so it writes nothing: {e}");
                None
            }
        };
        WavWriter { path: path.to_path_buf(), blocks, spare, spares: Vec::new(), queued, wait, finished }
    }

    /// Queues interleaved samples (the first block fixes the channel
    /// count). False if the block was dropped: the queue was full and the
    /// writer may not be waited for.
    pub fn write(&mut self, channels: u8, samples: &[f32]) -> bool {
        let bytes = samples.len() * 4;
        loop {
            while let Ok(buffer) = self.spare.try_recv() {
                self.keep(buffer);
            }
            let queued = self.queued.load(Ordering::Relaxed);
            if queued == 0 || queued + bytes <= QUEUE_BYTES {
                break;
            }
            if !self.wait {
                return false;
            }
            // The writer sends a buffer back after each block it wrote.
            match self.spare.recv() {
                Ok(buffer) => self.keep(buffer),
                Err(_) => return false,
            }
        }
        let Some(blocks) = &self.blocks else { return false };
        let mut buffer = self.spares.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(samples);
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        if blocks.send(Block { channels, samples: buffer }).is_err() {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn keep(&mut self, buffer: Vec<f32>) {
        if self.spares.len() < 16 {
            self.spares.push(buffer);
        }
    }

    /// Lets the writer write what is queued and complete the header, and
    /// waits for it: as long as it takes under `asap` (the file must be
    /// whole), [`FINISH_WAIT`] at most under `realtime` (a stalled disk
    /// must not hold a node's shutdown; the thread completes the file if
    /// the disk comes back before the process ends).
    pub fn finish(&mut self) -> Result<(), String> {
        if self.blocks.take().is_none() {
            return Ok(());
        }
        let finished = match self.wait {
            true => self.finished.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
            false => self.finished.recv_timeout(FINISH_WAIT),
        };
        match finished {
            Ok(result) => result,
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
                "{} is not complete: its writer still had {} KiB to write after {FINISH_WAIT:?} (a stalled disk?)",
                self.path.display(),
                self.queued.load(Ordering::Relaxed) >> 10
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("{}: its writer thread ended", self.path.display())),
        }
    }
}

/// A WAV file being written, block by block; the header is completed by
/// [`WavFile::finish`] (or, failing that, when dropped).
struct WavFile {
    path: PathBuf,
    format: WavFormat,
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    channels: u8,
    /// The first error, reported once.
    error: Option<String>,
}

impl WavFile {
    fn new(path: &Path, format: WavFormat) -> WavFile {
        WavFile { path: path.to_path_buf(), format, writer: None, channels: 0, error: None }
    }

    /// Appends interleaved samples; the first call fixes the channel count.
    fn write(&mut self, channels: u8, samples: &[f32]) {
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
    fn finish(&mut self) -> Result<(), String> {
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
    fn an_asap_writer_waits_for_the_disk_and_loses_nothing_past_its_queue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.wav");
        let mut writer = WavWriter::new(&path, WavFormat::F32, true);
        let blocks = 2 * QUEUE_BYTES / (480 * 4) + 7;
        for n in 0..blocks {
            assert!(writer.write(1, &[n as f32; 480]));
        }
        writer.finish().unwrap();
        let samples: Vec<f32> = hound::WavReader::open(&path).unwrap().into_samples::<f32>().map(Result::unwrap).collect();
        assert_eq!(samples.len(), blocks * 480);
        assert!(samples.chunks(480).enumerate().all(|(n, block)| block.iter().all(|&s| s == n as f32)));
    }

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
