//! The stock signaling stage, made to fail on purpose (tests and demos).
//!
//! Any message whose text contains `"fault":"panic"` makes it panic,
//! `"fault":"loop"` makes it spin until the deadline, `"fault":"sleep"`
//! makes it sleep for ten seconds, and `"fault":"huge"` answers it with a
//! 2 MiB message (over what the node sends); everything else is the stock
//! stage's (`medianode-signaling`), rooms in the state store and all.

use medianode_sdk::{SignalAction, SignalEvent, Signaling, Stage};
use medianode_signaling::{Config, RoomServer};
use std::hint::black_box;
use std::time::Duration;

pub struct FaultySignaling(RoomServer);

impl Stage for FaultySignaling {
    type Config = Config;
    fn new(config: Config) -> Result<Self, String> {
        RoomServer::new(config).map(FaultySignaling)
    }
}

impl Signaling for FaultySignaling {
    fn handle(&mut self, event: SignalEvent, out: &mut Vec<SignalAction>) {
        if let SignalEvent::Message { connection, text } = &event {
            if text.contains(r#""fault":"sleep""#) {
                std::thread::sleep(Duration::from_secs(10));
            }
            if text.contains(r#""fault":"huge""#) {
                out.push(SignalAction::Send { connection: *connection, text: "z".repeat(2 << 20) });
                return;
            }
            if text.contains(r#""fault":"panic""#) {
                panic!("asked to fail on this message");
            }
            if text.contains(r#""fault":"loop""#) {
                let mut n = 0u64;
                while black_box(n) != u64::MAX {
                    n = black_box(n.wrapping_add(1) | 1);
                }
            }
        }
        self.0.handle(event, out);
    }
}

medianode_sdk::export_signaling!(FaultySignaling);
