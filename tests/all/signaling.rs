//! The stock signaling plugin as a wasm component: messages in, replies
//! out, and rooms that outlive the instance (the host state store).

use crate::common::runtime;
use medianode::runtime::bindings::{SignalAction, SignalEvent, SignalMessage};
use medianode::runtime::{CallLimits, Instance, StageShared, stock};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

fn start(shared: &Arc<StageShared>) -> Instance {
    let plugin = runtime().load("stock:signaling", stock::bytes("signaling").expect("stock plugin"), 512 << 10).expect("load");
    let limits = CallLimits { deadline: Duration::from_secs(1), init_deadline: Duration::from_secs(5) };
    Instance::start(&plugin, shared.clone(), "{}", 64 << 20, limits).unwrap_or_else(|f| panic!("{}", f.message))
}

fn say(instance: &mut Instance, connection: u64, text: &str) -> Vec<(u64, Value)> {
    let events = [SignalEvent::Message(SignalMessage { connection, text: text.into() })];
    instance
        .handle_signals(&events)
        .expect("no trap")
        .into_iter()
        .filter_map(|a| match a {
            SignalAction::Send(m) | SignalAction::Close(m) => Some((m.connection, serde_json::from_str(&m.text).expect("JSON reply"))),
            SignalAction::Seated(_) | SignalAction::Unseated(_) => None,
        })
        .collect()
}

#[test]
fn a_room_conversation_through_the_wasm_plugin() {
    let shared = Arc::new(StageShared::new("signaling", 1 << 20));
    let mut signaling = start(&shared);
    assert_eq!(say(&mut signaling, 1, r#"{"type":"join","room":"r","user":"alice"}"#)[0].1["type"], "joined");
    say(&mut signaling, 2, r#"{"type":"join","room":"r","user":"bob"}"#);
    let typing = say(&mut signaling, 2, r#"{"type":"typing"}"#);
    assert_eq!((typing[0].0, typing[0].1["user"].as_str()), (1, Some("bob")));
    let bad = say(&mut signaling, 2, "{\"type\":");
    assert_eq!((bad[0].0, bad[0].1["code"].as_str()), (2, Some("bad-json")));
    // Deeply nested JSON is an error reply, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(say(&mut signaling, 2, &deep)[0].1["code"], "bad-json");

    // A new instance (as after a crash) finds the room as it was.
    drop(signaling);
    let mut again = start(&shared);
    let joined = say(&mut again, 3, r#"{"type":"join","room":"r","user":"carol"}"#);
    assert_eq!(joined[0].1["members"].as_array().map(Vec::len), Some(3));
    assert_eq!(joined.iter().filter(|(_, v)| v["type"] == "presence").count(), 2, "alice and bob hear of carol");
}
