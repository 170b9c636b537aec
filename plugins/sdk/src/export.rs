//! The glue between a plugin type and its WIT world: one generated binding
//! module and one export macro per stage kind.
//!
//! Each macro keeps the plugin value in a thread-local cell (a component
//! instance is single-threaded), starts it in `init`, and loops over each
//! batch calling [`crate::host::begin_item`] before every item. Nothing here
//! panics on input: a missing `init` or a bad config becomes an error or a
//! logged no-op, never a trap of the SDK's making.

use crate::host::{self, Level};
use crate::{Stage, start};
use std::cell::RefCell;
use std::thread::LocalKey;

/// Runs `init` for a stage kept in `cell`.
pub fn init<S: Stage>(cell: &'static LocalKey<RefCell<Option<S>>>, config: String) -> Result<(), String> {
    install_panic_hook();
    let stage = start::<S>(&config)?;
    cell.with_borrow_mut(|slot| *slot = Some(stage));
    Ok(())
}

/// Runs `f` on every item of a batch, marking each item for the host.
///
/// Before `init` succeeded there is no stage; the batch is returned through
/// `passthrough` and the host is told, rather than trapping.
pub fn each<S, In, Out>(
    cell: &'static LocalKey<RefCell<Option<S>>>,
    items: Vec<In>,
    passthrough: impl Fn(In) -> Option<Out>,
    mut f: impl FnMut(&mut S, In) -> Option<Out>,
) -> Vec<Out> {
    cell.with_borrow_mut(|slot| match slot.as_mut() {
        Some(stage) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.into_iter().enumerate() {
                host::begin_item(index as u32);
                if let Some(result) = f(stage, item) {
                    out.push(result);
                }
            }
            out
        }
        None => {
            host::log(Level::Error, "called before a successful init; items passed through");
            items.into_iter().filter_map(passthrough).collect()
        }
    })
}

/// Sends panic messages to the host log (in Rust's own `panicked at` form) so
/// that the crash report carries them.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        host::log(Level::Error, &format!("panicked at {location}:\n{message}"));
    }));
}

#[cfg(target_arch = "wasm32")]
pub mod audio_dsp {
    wit_bindgen::generate!({
        path: "../wit",
        world: "medianode:plugin/audio-dsp",
        with: { "medianode:plugin/host@0.1.0": crate::host::wit::medianode::plugin::host },
        pub_export_macro: true,
        export_macro_name: "__export_audio_dsp_world",
        default_bindings_module: "medianode_sdk::export::audio_dsp",
    });
    pub use exports::medianode::plugin::dsp::Guest as Dsp;
    pub use medianode::plugin::types::AudioBlock as WitBlock;

    pub fn from_wit(b: WitBlock) -> crate::AudioBlock {
        crate::AudioBlock { sequence: b.sequence, sample_rate: b.sample_rate, channels: b.channels, samples: b.samples }
    }
    pub fn to_wit(b: crate::AudioBlock) -> WitBlock {
        WitBlock { sequence: b.sequence, sample_rate: b.sample_rate, channels: b.channels, samples: b.samples }
    }
}

/// Exports a type implementing [`crate::AudioDsp`] as an audio DSP component.
/// Needs the SDK's `audio-dsp` feature; expands to nothing natively.
#[macro_export]
macro_rules! export_audio_dsp {
    ($stage:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::export::audio_dsp as w;
            ::std::thread_local! {
                static STAGE: ::std::cell::RefCell<Option<$stage>> = const { ::std::cell::RefCell::new(None) };
            }
            struct Glue;
            impl w::Dsp for Glue {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init(&STAGE, config)
                }
                fn process(blocks: Vec<w::WitBlock>) -> Vec<w::WitBlock> {
                    $crate::export::each(&STAGE, blocks, Some, |stage, block| {
                        let mut block = w::from_wit(block);
                        $crate::AudioDsp::process(stage, &mut block);
                        Some(w::to_wit(block))
                    })
                }
            }
            $crate::export::audio_dsp::__export_audio_dsp_world!(Glue with_types_in $crate::export::audio_dsp);
        };
    };
}

#[cfg(target_arch = "wasm32")]
pub mod frame_transform {
    wit_bindgen::generate!({
        path: "../wit",
        world: "medianode:plugin/frame-transform",
        with: { "medianode:plugin/host@0.1.0": crate::host::wit::medianode::plugin::host },
        pub_export_macro: true,
        export_macro_name: "__export_frame_transform_world",
        default_bindings_module: "medianode_sdk::export::frame_transform",
    });
    pub use exports::medianode::plugin::transform::Guest as Transform;
    pub use medianode::plugin::types::Frame as WitFrame;

    pub fn from_wit(f: WitFrame) -> crate::Frame {
        crate::Frame { stream: f.stream, sequence: f.sequence, timestamp: f.timestamp, payload: f.payload }
    }
    pub fn to_wit(f: crate::Frame) -> WitFrame {
        WitFrame { stream: f.stream, sequence: f.sequence, timestamp: f.timestamp, payload: f.payload }
    }
}

/// Exports a type implementing [`crate::FrameTransform`] as a frame transform
/// component. Needs the SDK's `frame-transform` feature.
#[macro_export]
macro_rules! export_frame_transform {
    ($stage:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::export::frame_transform as w;
            ::std::thread_local! {
                static STAGE: ::std::cell::RefCell<Option<$stage>> = const { ::std::cell::RefCell::new(None) };
            }
            struct Glue;
            impl w::Transform for Glue {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init(&STAGE, config)
                }
                fn transform(frames: Vec<w::WitFrame>) -> Vec<w::WitFrame> {
                    $crate::export::each(&STAGE, frames, Some, |stage, frame| {
                        $crate::FrameTransform::transform(stage, w::from_wit(frame)).map(w::to_wit)
                    })
                }
            }
            $crate::export::frame_transform::__export_frame_transform_world!(Glue with_types_in $crate::export::frame_transform);
        };
    };
}
