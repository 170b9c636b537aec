//! The `stock:biquad` plugin: [`medianode_dsp::biquad::Biquad`] as an audio DSP component.
//! The code and its settings are documented in `plugins/dsp/src/biquad.rs`.

medianode_sdk::export_audio_dsp!(medianode_dsp::biquad::Biquad);
