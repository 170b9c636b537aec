//! The `stock:gate` plugin: [`medianode_dsp::gate::Gate`] as an audio DSP component.
//! The code and its settings are documented in `plugins/dsp/src/gate.rs`.

medianode_sdk::export_audio_dsp!(medianode_dsp::gate::Gate);
