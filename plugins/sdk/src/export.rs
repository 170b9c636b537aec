//! The glue between a plugin type and its WIT world: one generated binding
//! module and one export macro per stage kind.
//!
//! Each macro keeps the plugin value in a thread-local cell (a component
//! instance is single-threaded), starts it in `init`, and hands each batch
//! to [`crate::process_batch`] or [`crate::transform_batch`], which call
//! [`crate::host::begin_item`] before every item. Nothing here
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

/// Runs `f` with the stage, or, before `init` succeeded (no stage), tells
/// the host and returns `None` so that the caller passes the batch through
/// rather than trapping.
pub fn with_stage<S, R>(cell: &'static LocalKey<RefCell<Option<S>>>, f: impl FnOnce(&mut S) -> R) -> Option<R> {
    cell.with_borrow_mut(|slot| match slot.as_mut() {
        Some(stage) => Some(f(stage)),
        None => {
            host::log(Level::Error, "called before a successful init; items passed through");
            None
        }
    })
}

/// Sends panic messages to the host log (in Rust's own `panicked at` form) so
/// that the crash report carries them.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(std::string::ToString::to_string)
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "Box<dyn Any>".into());
        host::log(Level::Error, &format!("panicked at {location}:\n{message}"));
    }));
}

#[cfg(target_os = "wasi")]
pub mod audio_dsp {
    wit_bindgen::generate!({
        path: "wit",
        world: "medianode:plugin/audio-dsp",
        with: { "medianode:plugin/host@0.3.0": crate::host::wit::medianode::plugin::host },
        pub_export_macro: true,
        export_macro_name: "__export_audio_dsp_world",
        default_bindings_module: "medianode_sdk::export::audio_dsp",
    });
    pub use exports::medianode::plugin::dsp::Guest as Dsp;
    pub use medianode::plugin::types::{AudioLevel, BlockInfo};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// The body of the `process` export: processes the batch in place and
    /// hands it back through the `dsp-output` import.
    pub fn process<S: crate::AudioDsp>(cell: &'static LocalKey<RefCell<Option<S>>>, blocks: Vec<BlockInfo>, mut samples: Vec<u32>) {
        let mut infos: Vec<crate::BlockInfo> = blocks.iter().map(from_wit).collect();
        // f32 bit patterns (see the WIT): the same buffer, read as f32.
        let pcm: &mut [f32] = bytemuck::cast_slice_mut(&mut samples);
        if super::with_stage(cell, |stage| crate::process_batch(stage, &mut infos, pcm)).is_none() {
            medianode::plugin::dsp_output::output(&blocks, &samples);
            return;
        }
        let out: Vec<BlockInfo> = infos.iter().map(to_wit).collect();
        medianode::plugin::dsp_output::output(&out, &samples);
    }

    fn from_wit(b: &BlockInfo) -> crate::BlockInfo {
        crate::BlockInfo {
            sequence: b.sequence,
            sample_rate: b.sample_rate,
            channels: b.channels,
            frames: b.frames,
            level: b.level.map(|l| crate::AudioLevel { rms_dbfs: l.rms_dbfs, peak_dbfs: l.peak_dbfs, voice: l.voice }),
        }
    }

    fn to_wit(b: &crate::BlockInfo) -> BlockInfo {
        BlockInfo {
            sequence: b.sequence,
            sample_rate: b.sample_rate,
            channels: b.channels,
            frames: b.frames,
            level: b.level.map(|l| AudioLevel { rms_dbfs: l.rms_dbfs, peak_dbfs: l.peak_dbfs, voice: l.voice }),
        }
    }
}

/// Exports a type implementing [`crate::AudioDsp`] as an audio DSP component.
/// Expands to nothing natively (where the stage is unit-tested as a plain type).
#[macro_export]
macro_rules! export_audio_dsp {
    ($stage:ty) => {
        #[cfg(target_os = "wasi")]
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
                fn process(blocks: Vec<w::BlockInfo>, samples: Vec<u32>) {
                    w::process(&STAGE, blocks, samples)
                }
            }
    $crate::export::audio_dsp::__export_audio_dsp_world!(Glue with_types_in $crate::export::audio_dsp);
        };
    };
}

#[cfg(target_os = "wasi")]
pub mod frame_transform {
    wit_bindgen::generate!({
        path: "wit",
        world: "medianode:plugin/frame-transform",
        with: { "medianode:plugin/host@0.3.0": crate::host::wit::medianode::plugin::host },
        pub_export_macro: true,
        export_macro_name: "__export_frame_transform_world",
        default_bindings_module: "medianode_sdk::export::frame_transform",
    });
    pub use exports::medianode::plugin::transform::Guest as Transform;
    pub use medianode::plugin::types::FlatFrames;
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// The body of the `transform` export. Before a successful `init` the
    /// frames pass through.
    pub fn transform<S: crate::FrameTransform>(
        cell: &'static LocalKey<RefCell<Option<S>>>,
        headers: Vec<u64>,
        payloads: Vec<u8>,
    ) -> FlatFrames {
        let infos = crate::flat::unpack(&headers);
        let mut out_frames = Vec::with_capacity(infos.len());
        let mut out_payloads = Vec::with_capacity(payloads.len());
        let ran = super::with_stage(cell, |stage| crate::transform_batch(stage, &infos, &payloads, &mut out_frames, &mut out_payloads));
        match ran {
            Some(()) => FlatFrames { headers: crate::flat::pack(&out_frames), payloads: out_payloads },
            None => FlatFrames { headers, payloads },
        }
    }
}

/// Exports a type implementing [`crate::FrameTransform`] as a frame transform
/// component. Expands to nothing natively.
#[macro_export]
macro_rules! export_frame_transform {
    ($stage:ty) => {
        #[cfg(target_os = "wasi")]
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
                fn transform(headers: Vec<u64>, payloads: Vec<u8>) -> w::FlatFrames {
                    w::transform(&STAGE, headers, payloads)
                }
            }
    $crate::export::frame_transform::__export_frame_transform_world!(Glue with_types_in $crate::export::frame_transform);
        };
    };
}

#[cfg(target_os = "wasi")]
pub mod forwarding {
    wit_bindgen::generate!({
        path: "wit",
        world: "medianode:plugin/packet-forwarding",
        with: { "medianode:plugin/host@0.3.0": crate::host::wit::medianode::plugin::host },
        pub_export_macro: true,
        export_macro_name: "__export_forwarding_world",
        default_bindings_module: "medianode_sdk::export::forwarding",
    });
    pub use exports::medianode::plugin::forward::Guest as Forward;
    pub use medianode::plugin::types::{ForwardBatch, RouteChange};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// The body of the `update` export.
    pub fn update<S: crate::Forwarding>(cell: &'static LocalKey<RefCell<Option<S>>>, changes: Vec<RouteChange>) {
        super::with_stage(cell, |stage| {
            for change in changes {
                stage.update(match change {
                    RouteChange::Joined(m) => crate::RouteChange::Joined { participant: m.participant, room: m.room },
                    RouteChange::Left(p) => crate::RouteChange::Left(p),
                    RouteChange::Receiver(r) => {
                        crate::RouteChange::Receiver { participant: r.participant, bitrate: r.bitrate, max_layer: r.max_layer }
                    }
                });
            }
        });
    }

    /// The body of the `forward` export: the packets come packed.
    pub fn forward<S: crate::Forwarding>(cell: &'static LocalKey<RefCell<Option<S>>>, packed: Vec<u64>) -> ForwardBatch {
        let packets = crate::flat::unpack_packets(&packed);
        let mut counts = Vec::with_capacity(packets.len());
        let mut subscribers = Vec::with_capacity(packets.len() * 4);
        let mut wanted = Vec::new();
        super::with_stage(cell, |stage| crate::forward_batch(stage, &packets, &mut counts, &mut subscribers, &mut wanted));
        ForwardBatch { counts, subscribers, keyframes: wanted.into_iter().map(crate::KeyframeRequest::pack).collect() }
    }
}

/// Exports a type implementing [`crate::Forwarding`] as a packet forwarding
/// component.
#[macro_export]
macro_rules! export_forwarding {
    ($stage:ty) => {
        #[cfg(target_os = "wasi")]
        const _: () = {
            use $crate::export::forwarding as w;
            ::std::thread_local! {
                static STAGE: ::std::cell::RefCell<Option<$stage>> = const { ::std::cell::RefCell::new(None) };
            }
            struct Glue;
            impl w::Forward for Glue {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init(&STAGE, config)
                }
                fn update(changes: Vec<w::RouteChange>) {
                    w::update(&STAGE, changes)
                }
                fn forward(packets: Vec<u64>) -> w::ForwardBatch {
                    w::forward(&STAGE, packets)
                }
            }
    $crate::export::forwarding::__export_forwarding_world!(Glue with_types_in $crate::export::forwarding);
        };
    };
}

#[cfg(target_os = "wasi")]
pub mod signaling {
    wit_bindgen::generate!({
        path: "wit",
        world: "medianode:plugin/signaling",
        with: { "medianode:plugin/host@0.3.0": crate::host::wit::medianode::plugin::host },
        pub_export_macro: true,
        export_macro_name: "__export_signaling_world",
        default_bindings_module: "medianode_sdk::export::signaling",
    });
    pub use exports::medianode::plugin::signal::Guest as Signal;
    pub use medianode::plugin::types::{Seat, SignalAction, SignalEvent, SignalMessage};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// The body of the `handle` export.
    pub fn handle<S: crate::Signaling>(cell: &'static LocalKey<RefCell<Option<S>>>, events: Vec<SignalEvent>) -> Vec<SignalAction> {
        let events: Vec<crate::SignalEvent> = events
            .into_iter()
            .map(|e| match e {
                SignalEvent::Connected(p) => crate::SignalEvent::Connected {
                    connection: p.connection,
                    grant: p.grant.map(|g| crate::Grant { room: g.room, user: g.user }),
                },
                SignalEvent::Message(m) => crate::SignalEvent::Message { connection: m.connection, text: m.text },
                SignalEvent::Disconnected(c) => crate::SignalEvent::Disconnected(c),
            })
            .collect();
        let actions = super::with_stage(cell, |stage| crate::handle_batch(stage, events)).unwrap_or_default();
        actions
            .into_iter()
            .map(|a| match a {
                crate::SignalAction::Send { connection, text } => SignalAction::Send(SignalMessage { connection, text }),
                crate::SignalAction::Close { connection, reason } => SignalAction::Close(SignalMessage { connection, text: reason }),
                crate::SignalAction::Seated { connection, room, user } => SignalAction::Seated(Seat { connection, room, user }),
                crate::SignalAction::Unseated(connection) => SignalAction::Unseated(connection),
            })
            .collect()
    }
}

/// Exports a type implementing [`crate::Signaling`] as a signaling component.
#[macro_export]
macro_rules! export_signaling {
    ($stage:ty) => {
        #[cfg(target_os = "wasi")]
        const _: () = {
            use $crate::export::signaling as w;
            ::std::thread_local! {
                static STAGE: ::std::cell::RefCell<Option<$stage>> = const { ::std::cell::RefCell::new(None) };
            }
            struct Glue;
            impl w::Signal for Glue {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init(&STAGE, config)
                }
                fn handle(events: Vec<w::SignalEvent>) -> Vec<w::SignalAction> {
                    w::handle(&STAGE, events)
                }
            }
    $crate::export::signaling::__export_signaling_world!(Glue with_types_in $crate::export::signaling);
        };
    };
}

#[cfg(target_os = "wasi")]
pub mod encryption {
    wit_bindgen::generate!({
        path: "wit",
        world: "medianode:plugin/media-encryption",
        with: {
            "medianode:plugin/host@0.3.0": crate::host::wit::medianode::plugin::host,
            "medianode:plugin/aead@0.3.0": crate::host::wit::medianode::plugin::aead,
        },
        pub_export_macro: true,
        export_macro_name: "__export_encryption_world",
        default_bindings_module: "medianode_sdk::export::encryption",
    });
    pub use exports::medianode::plugin::e2ee::Guest as E2ee;
    pub use medianode::plugin::types::{E2eeEvent, E2eeStatus, FlatFrames};
    use std::cell::RefCell;
    use std::thread::LocalKey;

    /// The body of the `control` export.
    pub fn control<S: crate::Encryption>(cell: &'static LocalKey<RefCell<Option<S>>>, events: Vec<E2eeEvent>) -> Vec<String> {
        let events = events
            .into_iter()
            .map(|e| match e {
                E2eeEvent::Seated(s) => crate::E2eeEvent::Seated { room: s.room, user: s.user, others: s.others, rejoined: s.rejoined },
                E2eeEvent::Message(text) => crate::E2eeEvent::Message(text),
            })
            .collect();
        super::with_stage(cell, |stage| crate::control_batch(stage, events)).unwrap_or_default()
    }

    /// The body of `seal` (`open: false`) and `open` (`open: true`). Before
    /// a successful `init` nothing comes out: frames are never passed
    /// through an encryption stage unsealed.
    pub fn frames<S: crate::Encryption>(
        cell: &'static LocalKey<RefCell<Option<S>>>,
        headers: Vec<u64>,
        payloads: Vec<u8>,
        open: bool,
    ) -> FlatFrames {
        let infos = crate::flat::unpack(&headers);
        let mut out_frames = Vec::with_capacity(infos.len());
        let mut out_payloads = Vec::with_capacity(payloads.len() + infos.len() * 32);
        let payloads = &payloads;
        super::with_stage(cell, |stage| {
            if open {
                crate::open_batch(stage, &infos, payloads, &mut out_frames, &mut out_payloads)
            } else {
                crate::frame_batch(&infos, payloads, &mut out_frames, &mut out_payloads, |m, p, o| stage.seal(m, p, o))
            }
        });
        FlatFrames { headers: crate::flat::pack(&out_frames), payloads: out_payloads }
    }

    /// The body of the `status` export.
    pub fn status<S: crate::Encryption>(cell: &'static LocalKey<RefCell<Option<S>>>) -> E2eeStatus {
        let status = super::with_stage(cell, |stage| stage.status()).unwrap_or_default();
        E2eeStatus { epoch: status.epoch, safety_number: status.safety_number, members: status.members }
    }
}

/// Exports a type implementing [`crate::Encryption`] as an end-to-end
/// encryption component.
#[macro_export]
macro_rules! export_encryption {
    ($stage:ty) => {
        #[cfg(target_os = "wasi")]
        const _: () = {
            use $crate::export::encryption as w;
            ::std::thread_local! {
                static STAGE: ::std::cell::RefCell<Option<$stage>> = const { ::std::cell::RefCell::new(None) };
            }
            struct Glue;
            impl w::E2ee for Glue {
                fn init(config: String) -> Result<(), String> {
                    $crate::export::init(&STAGE, config)
                }
                fn control(events: Vec<w::E2eeEvent>) -> Vec<String> {
                    w::control(&STAGE, events)
                }
                fn seal(headers: Vec<u64>, payloads: Vec<u8>) -> w::FlatFrames {
                    w::frames(&STAGE, headers, payloads, false)
                }
                fn open(headers: Vec<u64>, payloads: Vec<u8>) -> w::FlatFrames {
                    w::frames(&STAGE, headers, payloads, true)
                }
                fn status() -> w::E2eeStatus {
                    w::status(&STAGE)
                }
            }
    $crate::export::encryption::__export_encryption_world!(Glue with_types_in $crate::export::encryption);
        };
    };
}
