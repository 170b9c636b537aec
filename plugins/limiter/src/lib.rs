//! The `stock:limiter` plugin: [`medianode_dsp::limiter::Limiter`] as an audio DSP component.
//! The code and its settings are documented in `plugins/dsp/src/limiter.rs`.

medianode_sdk::export_audio_dsp!(medianode_dsp::limiter::Limiter);
