//! The `stock:compressor` plugin: [`medianode_dsp::compressor::Compressor`] as an audio DSP component.
//! The code and its settings are documented in `plugins/dsp/src/compressor.rs`.

medianode_sdk::export_audio_dsp!(medianode_dsp::compressor::Compressor);
