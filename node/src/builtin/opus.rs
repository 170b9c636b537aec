//! Opus encoding and decoding with libopus (the `opus` crate).
//!
//! The encoder turns each audio block into one Opus packet: a block must
//! be a length Opus accepts (2.5, 5, 10, 20, 40 or 60 ms at 48 kHz; the
//! node's 10 ms blocks are). The packet keeps the block's sequence number,
//! and its timestamp counts 48 kHz frames, as RTP does.
//!
//! The decoder turns packets back into blocks and hides losses: when
//! sequence numbers jump, it rebuilds the missing blocks (from the next
//! packet's in-band FEC for the one just before it, when the encoder sent
//! FEC; by Opus packet-loss concealment otherwise), so its output has no
//! gaps. A corrupt packet decodes as concealment too.
//!
//! Their settings are checked with the pipeline file, in
//! [`medianode_core::config::builtin`].

use super::BuiltinStage;
use crate::runtime::AudioBatch;
use crate::runtime::bindings::{BlockInfo, FrameBatch, FrameInfo};
use crate::runtime::{Items, SAMPLE_RATE};
pub use medianode_core::config::builtin::{DecoderConfig, EncoderConfig, OpusApplication};

/// The largest packet libopus writes for one frame.
const MAX_PACKET: usize = 1500;
/// The longest Opus frame: 120 ms at 48 kHz.
const MAX_FRAME: usize = 5760;
/// At most this many lost blocks are rebuilt at one gap; a longer outage
/// resumes without filling (the stream would otherwise stall behind it).
const MAX_CONCEALED: u64 = 50;

fn application(application: OpusApplication) -> opus::Application {
    match application {
        OpusApplication::Voip => opus::Application::Voip,
        OpusApplication::Audio => opus::Application::Audio,
        OpusApplication::LowDelay => opus::Application::LowDelay,
    }
}

fn channels(n: u8) -> Result<opus::Channels, String> {
    match n {
        1 => Ok(opus::Channels::Mono),
        2 => Ok(opus::Channels::Stereo),
        n => Err(format!("Opus codes 1 or 2 channels, not {n}")),
    }
}

pub struct OpusEncoder {
    config: EncoderConfig,
    /// Created at the first block, with its channel count.
    encoder: Option<(u8, opus::Encoder)>,
    packet: Vec<u8>,
}

impl OpusEncoder {
    pub fn new(config: &EncoderConfig) -> Result<OpusEncoder, String> {
        Ok(OpusEncoder { config: config.clone(), encoder: None, packet: vec![0; MAX_PACKET] })
    }

    fn encoder(&mut self, n: u8) -> Result<&mut opus::Encoder, String> {
        if self.encoder.as_ref().is_none_or(|(c, _)| *c != n) {
            let e = |e: opus::Error| format!("opus encoder: {e}");
            let mut encoder = opus::Encoder::new(SAMPLE_RATE, channels(n)?, application(self.config.application)).map_err(e)?;
            encoder.set_bitrate(opus::Bitrate::Bits(self.config.bitrate)).map_err(e)?;
            encoder.set_complexity(self.config.complexity).map_err(e)?;
            encoder.set_inband_fec(self.config.fec).map_err(e)?;
            encoder.set_packet_loss_perc(self.config.packet_loss).map_err(e)?;
            self.encoder = Some((n, encoder));
        }
        match &mut self.encoder {
            Some((_, encoder)) => Ok(encoder),
            None => Err("opus encoder missing".into()),
        }
    }
}

impl BuiltinStage for OpusEncoder {
    fn process(&mut self, items: Items) -> Items {
        let mut out = FrameBatch::new();
        let Items::Audio(batch) = items else { return Items::Frames(out) };
        for (info, samples) in batch.iter() {
            let mut packet = std::mem::take(&mut self.packet);
            let encoded = self.encoder(info.channels).and_then(|e| e.encode_float(samples, &mut packet).map_err(|e| format!("{e}")));
            match encoded {
                Ok(len) => {
                    let frame =
                        FrameInfo { stream: 0, sequence: info.sequence, timestamp: info.sequence * u64::from(info.frames), size: 0 };
                    out.push(frame, &packet[..len]);
                }
                Err(e) => {
                    tracing::error!(sequence = info.sequence, frames = info.frames, error = %e, "opus-encoder dropped a block (Opus takes 2.5 to 60 ms frames)");
                }
            }
            self.packet = packet;
        }
        Items::Frames(out)
    }
}

pub struct OpusDecoder {
    config: DecoderConfig,
    decoder: opus::Decoder,
    pcm: Vec<f32>,
    /// The sequence expected next, and the block length seen last.
    next: Option<u64>,
    frames: usize,
}

impl OpusDecoder {
    pub fn new(config: &DecoderConfig) -> Result<OpusDecoder, String> {
        let decoder = opus::Decoder::new(SAMPLE_RATE, channels(config.channels)?).map_err(|e| format!("opus decoder: {e}"))?;
        Ok(OpusDecoder { config: config.clone(), decoder, pcm: vec![0.0; MAX_FRAME * 2], next: None, frames: 480 })
    }

    /// Decodes `packet` (`None`: conceal a loss), or with `fec`, the block
    /// before it from its redundancy; appends the block as `sequence`.
    fn decode(&mut self, packet: Option<&[u8]>, fec: bool, sequence: u64, out: &mut AudioBatch) {
        let n = usize::from(self.config.channels);
        let result = match packet {
            // A loss: conceal exactly one block's length.
            None => self.decoder.decode_float(&[], &mut self.pcm[..self.frames * n], false),
            Some(p) if fec => self.decoder.decode_float(p, &mut self.pcm[..self.frames * n], true),
            Some(p) => self.decoder.decode_float(p, &mut self.pcm, false),
        };
        let frames = result.unwrap_or_else(|e| {
            tracing::warn!(sequence, error = %e, "opus-decoder: undecodable packet, concealed");
            self.decoder.decode_float(&[], &mut self.pcm[..self.frames * n], false).unwrap_or(0)
        });
        let frames = if frames == 0 { self.frames } else { frames };
        if packet.is_some() && !fec {
            self.frames = frames;
        }
        let end = (frames * n).min(self.pcm.len());
        let samples = &mut self.pcm[..end];
        if frames == 0 || samples.iter().any(|s| !s.is_finite()) {
            samples.fill(0.0);
        }
        let info = BlockInfo { sequence, sample_rate: SAMPLE_RATE, channels: self.config.channels, frames: frames as u32, level: None };
        out.push(info, samples);
    }
}

impl OpusDecoder {
    /// Decodes `batch` onto `out` (losses concealed, late packets dropped).
    pub fn decode_into(&mut self, batch: &FrameBatch, out: &mut AudioBatch) {
        for (info, packet) in batch.iter() {
            let sequence = info.sequence;
            if let Some(next) = self.next {
                if sequence < next {
                    tracing::debug!(sequence, "opus-decoder: late or repeated packet dropped");
                    continue;
                }
                let missing = sequence - next;
                if missing > 0 && missing <= MAX_CONCEALED {
                    for lost in next..sequence - 1 {
                        self.decode(None, false, lost, out);
                    }
                    // The block just before this packet can come from its FEC.
                    self.decode(Some(packet), self.config.fec, sequence - 1, out);
                }
            }
            self.decode(Some(packet), false, sequence, out);
            self.next = Some(sequence + 1);
        }
    }
}

impl BuiltinStage for OpusDecoder {
    fn process(&mut self, items: Items) -> Items {
        let mut out = AudioBatch::new();
        if let Items::Frames(batch) = items {
            self.decode_into(&batch, &mut out);
        }
        Items::Audio(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(sequence: u64) -> Items {
        let samples: Vec<f32> = (0..480).map(|i| 0.3 * ((sequence * 480 + i) as f32 * 0.05).sin()).collect();
        let mut batch = AudioBatch::new();
        batch.push(BlockInfo { sequence, sample_rate: SAMPLE_RATE, channels: 1, frames: 480, level: None }, &samples);
        Items::Audio(batch)
    }

    #[test]
    fn lost_packets_come_back_as_concealed_blocks_in_order() {
        let mut encoder = OpusEncoder::new(&EncoderConfig::default()).unwrap();
        let mut decoder = OpusDecoder::new(&DecoderConfig::default()).unwrap();
        let mut sequences = Vec::new();
        for n in 0..20u64 {
            let Items::Frames(packets) = encoder.process(block(n)) else { panic!("frames expected") };
            assert_eq!(packets.frames.len(), 1);
            assert!(packets.frames[0].size > 10 && packets.frames[0].size < 400, "{:?}", packets.frames[0]);
            if [5, 9, 10, 11].contains(&n) {
                continue; // lost on the way
            }
            let Items::Audio(blocks) = decoder.process(Items::Frames(packets)) else { panic!("audio expected") };
            for (info, samples) in blocks.iter() {
                assert_eq!(samples.len(), 480);
                assert!(samples.iter().all(|s| s.is_finite()));
                sequences.push(info.sequence);
            }
        }
        assert_eq!(sequences, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn a_corrupt_packet_is_concealed_not_a_crash() {
        let mut decoder = OpusDecoder::new(&DecoderConfig { channels: 1, fec: true }).unwrap();
        let mut batch = FrameBatch::new();
        batch.push(FrameInfo { stream: 0, sequence: 0, timestamp: 0, size: 0 }, &[0xff; 7]);
        let Items::Audio(out) = decoder.process(Items::Frames(batch)) else { panic!("audio expected") };
        assert_eq!(out.blocks.len(), 1);
    }
}
