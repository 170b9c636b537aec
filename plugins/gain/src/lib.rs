//! The `stock:gain` plugin: [`medianode_dsp::gain::Gain`] as an audio DSP component.
//! The code and its settings are documented in `plugins/dsp/src/gain.rs`.

medianode_sdk::export_audio_dsp!(medianode_dsp::gain::Gain);
