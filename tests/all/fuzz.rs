//! Property tests over what reaches the node from outside: pipeline files,
//! signaling messages, SDP and RTP, SFrame headers, and the MLS messages
//! the E2EE stage takes from the room. A bounded number of random cases per
//! run (`PROPTEST_CASES` raises it); each must give an answer, never a
//! panic, and answers stay bounded.

use base64::Engine as _;
use medianode_e2ee::sframe_layer::{decode_header, encode_header};
use medianode_e2ee::stage::E2ee;
use medianode_sdk::{E2eeEvent, Encryption, SignalAction, SignalEvent, Signaling};
use medianode_signaling::RoomServer;
use proptest::prelude::*;
use serde_json::json;

const DEMO: &str = include_str!("../../pipelines/demo.toml");

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// A signaling message: one of the protocol's types with random fields, or
/// anything at all.
fn signaling_message() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        "join",
        "leave",
        "typing",
        "ack",
        "read",
        "chat",
        "mls-commit",
        "mls-welcome",
        "mls-key-package",
        "ping",
        "nonsense",
        "",
    ]);
    let field = prop_oneof![
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,40}".prop_map(|s| json!(s)),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|v| json!(v)),
    ];
    prop_oneof![
        (kinds, field.clone(), field.clone(), field)
            .prop_map(|(kind, a, b, c)| { json!({"type": kind, "room": a, "user": b, "id": c.clone(), "text": c}).to_string() }),
        "\\PC{0,200}",
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_as_a_pipeline_file_is_an_answer(text in "\\PC{0,300}") {
        let _ = medianode::config::load_str("fuzz.toml", text);
    }

    #[test]
    fn a_damaged_pipeline_file_gets_a_located_error(at in 0..DEMO.len(), byte in any::<u8>(), keep in 1..DEMO.len()) {
        let mut bytes = DEMO.as_bytes().to_vec();
        bytes[at] = byte;
        bytes.truncate(keep);
        if let Ok(text) = String::from_utf8(bytes)
            && let Err(e) = medianode::config::load_str("fuzz.toml", text)
        {
            prop_assert!(e.to_string().contains("fuzz.toml"), "an error without its file: {e}");
        }
    }

    #[test]
    fn the_signaling_stage_answers_any_message(messages in prop::collection::vec(signaling_message(), 1..16)) {
        medianode_sdk::host::use_state_store("fuzz-signaling");
        let mut stage: RoomServer = medianode_sdk::start("{}").expect("starts");
        let mut out = Vec::new();
        stage.handle(SignalEvent::Connected { connection: 1, grant: None }, &mut out);
        stage.handle(SignalEvent::Connected { connection: 2, grant: None }, &mut out);
        for (i, text) in messages.into_iter().enumerate() {
            out.clear();
            stage.handle(SignalEvent::Message { connection: 1 + (i as u64 % 2), text }, &mut out);
            // An answer to the sender at least, and nothing without bound.
            prop_assert!(!out.is_empty(), "a message went unanswered");
            prop_assert!(out.len() <= 8, "{} actions for one message", out.len());
            for action in &out {
                if let SignalAction::Send { text, .. } = action {
                    prop_assert!(text.len() < 64 << 10);
                }
            }
        }
        stage.handle(SignalEvent::Disconnected(1), &mut out);
        stage.handle(SignalEvent::Disconnected(1), &mut out);
    }

    #[test]
    fn any_sdp_gives_an_extension_id_or_none(sdp in "\\PC{0,300}", id in 0u16..300) {
        let line = format!("{sdp}\r\na=extmap:{id} {}\r\n", medianode::peer::AUDIO_LEVEL_URI);
        let found = medianode::sfu::extension_id(&line, medianode::peer::AUDIO_LEVEL_URI);
        if let Ok(id) = u8::try_from(id) && !sdp.contains("a=extmap") {
            prop_assert_eq!(found, Some(id));
        }
    }

    #[test]
    fn sframe_headers_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        let _ = decode_header(&bytes);
    }

    #[test]
    fn sframe_headers_round_trip(kid in any::<u64>(), ctr in any::<u64>(), tail in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut frame = encode_header(kid, ctr);
        frame.extend(tail);
        prop_assert_eq!(decode_header(&frame).ok(), Some((kid, ctr)));
    }

    #[test]
    fn the_e2ee_stage_takes_any_room_message(messages in prop::collection::vec((0usize..6, prop::collection::vec(any::<u8>(), 0..96), 0u64..4, "\\PC{0,12}"), 1..12)) {
        medianode_sdk::host::use_state_store("fuzz-e2ee");
        let mut stage: E2ee = medianode_sdk::start("{}").expect("starts");
        let mut out = Vec::new();
        stage.control(E2eeEvent::Seated { room: "r".into(), user: "alice".into(), others: vec![], rejoined: false }, &mut out);
        for (kind, bytes, epoch, user) in messages {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let message = match kind {
                0 => json!({"type": "mls-commit", "epoch": epoch, "commit": b64}),
                1 => json!({"type": "mls-welcome", "welcome": b64}),
                2 => json!({"type": "mls-key-package", "user": user, "package": b64}),
                3 => json!({"type": "presence", "room": "r", "user": user, "state": "left"}),
                4 => json!({"type": "mls-accepted", "epoch": epoch}),
                _ => json!({"type": "error", "code": "stale-epoch", "epoch": epoch}),
            };
            out.clear();
            stage.control(E2eeEvent::Message(message.to_string()), &mut out);
            prop_assert!(out.len() <= 4, "{} messages out for one in", out.len());
        }
        // It still answers (a member of its group, or on its way back in).
        let _ = stage.status();
    }
}
