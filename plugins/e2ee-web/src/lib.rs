//! The E2EE stage in the browser.
//!
//! The same code the edge node runs as a plugin (`medianode-e2ee`: the
//! openmls group, SFrame per RFC 9605 with keys from the MLS exporter, the
//! idempotent membership rules, the grace window for old epochs), compiled
//! for `wasm32-unknown-unknown` and handed to JavaScript by wasm-bindgen.
//! A page's Worker holds one [`Member`]: it feeds it the room's signaling
//! messages, sends what the member answers, and seals and opens every
//! encoded frame with it.
//!
//! What the node's host does for the plugin, this crate does for the page:
//! it turns `joined` into the stage's seat and keeps the roster
//! ([`medianode_sdk::room`], the rule the edge node follows too), gives the
//! stage a clock (`performance.now()`) and a log (the console), and runs
//! frames through the SDK's batch runners as the export glue does.

use medianode_e2ee::stage::E2ee;
use medianode_sdk::room::Roster;
use medianode_sdk::{E2eeStatus, Encryption, FrameInfo};
use wasm_bindgen::prelude::*;

/// One participant's E2EE: its MLS group membership and its SFrame keys.
#[wasm_bindgen]
pub struct Member {
    stage: E2ee,
    roster: Roster,
    frames: Vec<FrameInfo>,
    payloads: Vec<u8>,
    /// Frames an earlier `open` held (sent under an epoch this member had
    /// not reached) that open now, by the tag they came with.
    released: std::collections::VecDeque<Released>,
}

/// A frame held by an earlier [`Member::open`] that opens now.
#[wasm_bindgen(getter_with_clone)]
pub struct Released {
    /// The tag given to `open` with the frame.
    pub tag: u32,
    /// The opened frame.
    pub payload: Vec<u8>,
}

/// Released frames kept for [`Member::take_released`], at most (the
/// keyring holds as many).
const RELEASED_KEPT: usize = 64;

#[wasm_bindgen]
impl Member {
    /// A member that will sit in `room` as `user`. `config_json` is the
    /// stage's config (as `[stage.config]` in a pipeline file, in JSON;
    /// `"{}"` for the defaults). The browser has no host AEAD: give
    /// `{"aead": "wasm"}`.
    #[wasm_bindgen(constructor)]
    pub fn new(room: &str, user: &str, config_json: &str) -> Result<Member, JsError> {
        embed();
        let stage = medianode_sdk::start::<E2ee>(config_json).map_err(|e| JsError::new(&e))?;
        Ok(Member {
            stage,
            roster: Roster::new(room, user),
            frames: Vec::new(),
            payloads: Vec::new(),
            released: std::collections::VecDeque::new(),
        })
    }

    /// A message from the signaling server (JSON text). Returns the
    /// messages to send to the server (JSON texts), in order.
    pub fn signal(&mut self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(event) = self.roster.event(text) {
            self.stage.control(event, &mut out);
        }
        out
    }

    /// Seals one outbound encoded frame; `undefined` while there is no key
    /// to seal with (fail closed: the frame is not sent).
    pub fn seal(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.run(payload, false, 0)
    }

    /// Opens one inbound frame; `undefined` when it does not open (a
    /// stranger's key, a forgery, an epoch past its grace window) or not
    /// yet: a frame sealed under the next epoch is held for a while, and
    /// once this member reaches that epoch it comes out of
    /// [`Member::take_released`] with `tag`.
    pub fn open(&mut self, frame: &[u8], tag: Option<u32>) -> Option<Vec<u8>> {
        // The stage's clock for this call, and the frames that open now.
        for (meta, payload) in self.stage.released() {
            if self.released.len() == RELEASED_KEPT {
                self.released.pop_front();
            }
            self.released.push_back(Released { tag: meta.sequence as u32, payload });
        }
        self.run(frame, true, tag.unwrap_or(0))
    }

    /// The next held frame that opened, oldest first; `undefined` when
    /// there is none.
    #[wasm_bindgen(js_name = takeReleased)]
    pub fn take_released(&mut self) -> Option<Released> {
        self.released.pop_front()
    }

    /// The MLS epoch, once in a group.
    pub fn epoch(&self) -> Option<u64> {
        self.stage.status().epoch
    }

    /// The epoch's safety number: equal for every member on the same epoch,
    /// for people to compare (hex, in groups of four).
    #[wasm_bindgen(js_name = safetyNumber)]
    pub fn safety_number(&self) -> String {
        safety_number(&self.stage.status())
    }

    /// The group's members, this one included.
    pub fn members(&self) -> Vec<String> {
        self.stage.status().members
    }
}

impl Member {
    /// One frame through the stage the way the export glue runs a batch.
    fn run(&mut self, payload: &[u8], open: bool, tag: u32) -> Option<Vec<u8>> {
        let info = [FrameInfo { size: payload.len() as u32, sequence: u64::from(tag), ..Default::default() }];
        self.frames.clear();
        self.payloads.clear();
        let stage = &mut self.stage;
        medianode_sdk::frame_batch(&info, payload, &mut self.frames, &mut self.payloads, |meta, payload, out| match open {
            true => stage.open(meta, payload, out),
            false => stage.seal(meta, payload, out),
        });
        (!self.frames.is_empty()).then(|| self.payloads.clone())
    }
}

/// Hex in groups of four: what two people read to each other.
fn safety_number(status: &E2eeStatus) -> String {
    let groups: Vec<String> = status.safety_number.chunks(2).map(|pair| pair.iter().map(|b| format!("{b:02x}")).collect()).collect();
    groups.join(" ")
}

/// The page's clock and console for the stage.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
fn embed() {
    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = performance, js_name = now)]
        fn performance_now() -> f64;
        #[wasm_bindgen(js_namespace = console, js_name = log)]
        fn console_log(text: &str);
    }
    fn clock() -> u64 {
        (performance_now() * 1e6) as u64
    }
    fn log(level: medianode_sdk::host::Level, text: &str) {
        console_log(&format!("[e2ee {level:?}] {text}"));
    }
    medianode_sdk::host::embed(clock, log);
}

#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
fn embed() {}

#[cfg(test)]
mod tests;
