//! What the host knows about a plugin without running it.

/// What a stage does, read from the interface (WIT world) its plugin
/// exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageKind {
    AudioDsp,
    FrameTransform,
    PacketForwarding,
    Signaling,
    Encryption,
}

/// The version of the plugin contract (`package medianode:plugin@…` in
/// plugins/sdk/wit/plugin.wit) this node runs. 0.2.0: frame headers cross
/// the boundary packed (`flat-frames`); 0.3.0: simulcast layers in
/// `forward`.
pub const CONTRACT_VERSION: &str = "0.3.0";

impl StageKind {
    /// Every kind with the WIT interface a plugin of that kind exports.
    pub const ALL: [(StageKind, &'static str); 5] = [
        (StageKind::AudioDsp, "medianode:plugin/dsp@0.3.0"),
        (StageKind::FrameTransform, "medianode:plugin/transform@0.3.0"),
        (StageKind::PacketForwarding, "medianode:plugin/forward@0.3.0"),
        (StageKind::Signaling, "medianode:plugin/signal@0.3.0"),
        (StageKind::Encryption, "medianode:plugin/e2ee@0.3.0"),
    ];

    /// The name used in configs, logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            StageKind::AudioDsp => "audio-dsp",
            StageKind::FrameTransform => "frame-transform",
            StageKind::PacketForwarding => "packet-forwarding",
            StageKind::Signaling => "signaling",
            StageKind::Encryption => "media-encryption",
        }
    }
}
