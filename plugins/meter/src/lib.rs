//! The `stock:meter` plugin: [`medianode_dsp::meter::Meter`] as an audio DSP component.
//! The code and its settings are documented in `plugins/dsp/src/meter.rs`.

medianode_sdk::export_audio_dsp!(medianode_dsp::meter::Meter);
