//! An example native plugin: the stock gain stage
//! ([`medianode_dsp::gain::Gain`], the same code as `stock:gain`) built as
//! a shared library that the node loads with `libloading`.
//!
//! ```toml
//! [[stage]]
//! id = "gain"
//! plugin = "libmedianode_native_gain.so"
//! trust = "native"            # required: a native plugin is not sandboxed
//! inputs = ["tone"]
//! config = { gain-db = -6.0 }
//! ```
//!
//! Build: `cargo build --release -p medianode-native-gain`. The tests build
//! it too (`tests/build.rs`) and run it beside its wasm twin.

medianode_sdk::export_native_audio_dsp!(medianode_dsp::gain::Gain);
