//! The E2EE stage: one room's MLS group kept through signaling messages,
//! and SFrame sealing and opening of media frames with its keys.
//!
//! How a member gets into the group and stays there:
//!
//! - Seated alone, it creates the group (epoch 0). Seated with others, it
//!   publishes a fresh key package (`mls-key-package`) and waits for a
//!   welcome; until then nothing is sealed or opened: frames are dropped.
//! - Every member with a group reconciles what it wants (key packages to
//!   add, departed users to remove) into one commit when it has none in
//!   flight, and sends it to the delivery service (the signaling stage),
//!   which accepts the first commit per epoch (`mls-accepted`: merge it)
//!   and refuses the rest (`stale-epoch`: drop it, apply the winner's, try
//!   again if anything is still wanted). Every change is idempotent, so it
//!   does not matter which member's commit wins.
//! - A commit from an epoch this member already left behind is ignored; one
//!   from an epoch ahead of it means it missed something: it starts over
//!   with a fresh key package, as it does after a rejoin of its signaling
//!   connection (the others will have removed it) and when its saved state
//!   does not load. The others replace its old leaf in one commit.
//!
//! Surviving a crash: after every change of the group the member (keys,
//! openmls store) and the room's wishes are written to the host state
//! store; a fresh instance resumes from them and seals again at once.

use crate::config::{AeadPlace, Config, Suite};
use crate::host_crypto::HostAead;
use crate::keyring::{KeyRing, KeyRingStats, Opened};
use crate::membership::{Applied, Member};
use crate::sframe_layer::{Backend, CipherSuite, Pure, SframeError};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use medianode_sdk::host::{self, Level};
use medianode_sdk::{E2eeEvent, E2eeStatus, Encryption, FrameMeta, Payload, Stage, Verdict};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The keyring, with the crypto backend the config chose.
enum Ring {
    Host(KeyRing<HostAead, FrameMeta>),
    Wasm(KeyRing<Pure, FrameMeta>),
}

/// Runs `$body` with `$ring` bound to whichever keyring it is.
macro_rules! with_ring {
    ($self:expr, $ring:ident => $body:expr) => {
        match $self {
            Ring::Host($ring) => $body,
            Ring::Wasm($ring) => $body,
        }
    };
}

impl Ring {
    fn keyring<B: Backend>(config: &Config) -> KeyRing<B, FrameMeta> {
        let suite = match config.suite {
            Suite::Aes128Gcm => CipherSuite::AesGcm128Sha256,
            Suite::Aes256Gcm => CipherSuite::AesGcm256Sha512,
        };
        KeyRing::new(suite, Duration::from_millis(config.grace_ms), Duration::from_millis(config.hold_ms))
    }

    fn set_epoch(&mut self, now: Duration, member: &Member) -> Result<(), String> {
        let (Some(epoch), Some(index)) = (member.epoch(), member.leaf_index()) else {
            with_ring!(self, r => r.clear());
            return Ok(());
        };
        let len = with_ring!(self, r => r.base_key_len());
        let base_key = member.sframe_base_key(len).map_err(|e| e.0)?;
        with_ring!(self, r => r.set_epoch(now, epoch, base_key, index)).map_err(|SframeError(e)| e)
    }

    fn stats(&self) -> KeyRingStats {
        with_ring!(self, r => r.stats)
    }
}

/// This node's seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Seat {
    room: String,
    user: String,
}

/// What a member wants of the group, kept across a crash with the member.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Wishes {
    seat: Option<Seat>,
    /// Key packages to add, by user (base64).
    joining: BTreeMap<String, String>,
    /// Users who left and may still have a leaf.
    departed: BTreeSet<String>,
    /// The epoch of this member's commit waiting for the delivery service.
    pending: Option<u64>,
}

const MEMBER_KEY: &str = "member";
const WISHES_KEY: &str = "wishes";

pub struct E2ee {
    ring: Ring,
    member: Option<Member>,
    wishes: Wishes,
    /// When the counters were last published (ns, host clock).
    published: u64,
    /// The host clock at the start of the current `open` batch (one host
    /// call per batch, not per frame).
    batch_time: Duration,
}

impl Stage for E2ee {
    type Config = Config;

    fn new(config: Config) -> Result<E2ee, String> {
        let ring = match config.aead {
            AeadPlace::Host => Ring::Host(Ring::keyring(&config)),
            AeadPlace::Wasm => Ring::Wasm(Ring::keyring(&config)),
        };
        let mut stage = E2ee { ring, member: None, wishes: Wishes::default(), published: 0, batch_time: Duration::ZERO };
        stage.resume();
        Ok(stage)
    }
}

fn now() -> Duration {
    Duration::from_nanos(host::monotonic_now())
}

fn log(level: Level, message: &str) {
    host::log(level, message);
}

impl E2ee {
    /// Picks up the group where a crashed instance left it, when its saved
    /// state loads; otherwise starts clean (and rejoins once seated).
    fn resume(&mut self) {
        self.member = None;
        self.wishes = Wishes::default();
        let wishes = host::state_get(WISHES_KEY).and_then(|b| serde_json::from_slice::<Wishes>(&b).ok());
        let member = host::state_get(MEMBER_KEY).map(|b| Member::restore(&b));
        match (wishes, member) {
            (Some(wishes), Some(Ok(member))) => {
                self.wishes = wishes;
                self.member = Some(member);
                self.rekey();
                host::counter_add("resumed", 1);
            }
            (_, Some(Err(e))) => {
                log(Level::Warn, &format!("the saved MLS state does not load ({e}); this member will rejoin"));
                host::state_delete(MEMBER_KEY);
                host::state_delete(WISHES_KEY);
            }
            _ => {}
        }
    }

    /// Writes the member and its wishes to the host state store.
    fn save(&self) {
        let member = self.member.as_ref().map(Member::save);
        let wishes = serde_json::to_vec(&self.wishes);
        match (member, wishes) {
            (Some(Ok(member)), Ok(wishes)) => {
                let written = host::state_put(MEMBER_KEY, &member).and_then(|()| host::state_put(WISHES_KEY, &wishes));
                if let Err(e) = written {
                    log(Level::Error, &format!("cannot save the MLS state ({e}); a crash now means a rejoin"));
                }
            }
            (Some(Err(e)), _) => log(Level::Error, &format!("cannot save the MLS state: {e}")),
            (_, Err(e)) => log(Level::Error, &format!("cannot save the room's state: {e}")),
            (None, _) => {
                host::state_delete(MEMBER_KEY);
                host::state_delete(WISHES_KEY);
            }
        }
    }

    /// Keys the ring for the member's current epoch (or clears it).
    fn rekey(&mut self) {
        let result = match &self.member {
            Some(member) => self.ring.set_epoch(now(), member),
            None => {
                with_ring!(&mut self.ring, r => r.clear());
                Ok(())
            }
        };
        if let Err(e) = result {
            log(Level::Error, &format!("cannot key the epoch: {e}"));
            with_ring!(&mut self.ring, r => r.clear());
        }
        if let Some(epoch) = self.member.as_ref().and_then(Member::epoch) {
            host::gauge_set("epoch", epoch as f64);
        }
    }

    /// Starts over in the room: a fresh identity, then either a new group
    /// (alone) or a key package for the others to add.
    fn start_over(&mut self, alone: bool, out: &mut Vec<String>) {
        let Some(seat) = self.wishes.seat.clone() else { return };
        self.wishes = Wishes { seat: Some(seat.clone()), ..Wishes::default() };
        let mut member = match Member::new(&seat.user) {
            Ok(member) => member,
            Err(e) => {
                log(Level::Error, &format!("cannot make an MLS identity: {e}"));
                return;
            }
        };
        if alone {
            if let Err(e) = member.create_group(&seat.room) {
                log(Level::Error, &format!("cannot create the room's group: {e}"));
            }
        } else {
            match member.key_package() {
                Ok(package) => out.push(json!({"type": "mls-key-package", "package": B64.encode(package)}).to_string()),
                Err(e) => log(Level::Error, &format!("cannot make a key package: {e}")),
            }
        }
        // The old group's keys go with it: the new group numbers its epochs
        // from 0 again, and a key kept for "epoch 2" of the old group would
        // be taken for the new one's (its frames then fail as forged).
        with_ring!(&mut self.ring, r => r.clear());
        self.member = Some(member);
        self.rekey();
        self.save();
        host::counter_add("rejoins", u64::from(!alone));
    }

    /// Turns outstanding wishes into one commit, when none is in flight.
    fn reconcile(&mut self, out: &mut Vec<String>) {
        if self.wishes.pending.is_some() {
            return;
        }
        let Some(member) = self.member.as_mut().filter(|m| m.epoch().is_some()) else { return };
        let packages: Vec<Vec<u8>> = self.wishes.joining.values().filter_map(|p| B64.decode(p).ok()).collect();
        let departed: Vec<&str> = self.wishes.departed.iter().map(String::as_str).collect();
        match member.change(&packages, &departed) {
            Ok(Some(commit)) => {
                let mut message = json!({
                    "type": "mls-commit",
                    "epoch": commit.epoch,
                    "commit": B64.encode(&commit.commit),
                    "joiners": commit.joiners,
                });
                if let Some(welcome) = &commit.welcome {
                    message["welcome"] = json!(B64.encode(welcome));
                }
                out.push(message.to_string());
                self.wishes.pending = Some(commit.epoch);
            }
            // Everything wanted is done (by this member or another).
            Ok(None) => {
                self.wishes.joining.clear();
                self.wishes.departed.clear();
            }
            Err(e) => {
                log(Level::Error, &format!("cannot commit the room's changes, dropped: {e}"));
                self.wishes.joining.clear();
                self.wishes.departed.clear();
            }
        }
        self.save();
    }

    /// This member's commit lost (or is moot): drop it.
    fn drop_pending(&mut self) {
        if self.wishes.pending.take().is_some()
            && let Some(member) = self.member.as_mut()
            && let Err(e) = member.rejected()
        {
            log(Level::Warn, &format!("cannot drop the pending commit: {e}"));
        }
    }

    fn on_message(&mut self, message: &Value, out: &mut Vec<String>) {
        let text = |key: &str| message.get(key).and_then(Value::as_str);
        let bytes = |key: &str| text(key).and_then(|t| B64.decode(t).ok());
        let epoch = message.get("epoch").and_then(Value::as_u64);
        match text("type").unwrap_or_default() {
            "presence" if text("state") == Some("left") => {
                if let Some(user) = text("user") {
                    self.wishes.joining.remove(user);
                    self.wishes.departed.insert(user.to_string());
                }
            }
            "mls-key-package" => {
                if let (Some(user), Some(package)) = (text("user"), text("package")) {
                    self.wishes.departed.remove(user);
                    self.wishes.joining.insert(user.to_string(), package.to_string());
                }
            }
            "mls-welcome" => {
                let Some(welcome) = bytes("welcome") else { return };
                let Some(member) = self.member.as_mut() else { return };
                match member.join(&welcome) {
                    Ok(()) => {
                        self.wishes.pending = None;
                        self.rekey();
                    }
                    // A welcome for an identity this member no longer has.
                    Err(e) => log(Level::Debug, &format!("a welcome that is not for this member: {e}")),
                }
            }
            "mls-accepted" => {
                if self.wishes.pending.is_some() && self.wishes.pending == epoch {
                    self.wishes.pending = None;
                    if let Some(member) = self.member.as_mut()
                        && let Err(e) = member.confirm()
                    {
                        log(Level::Error, &format!("cannot merge this member's accepted commit: {e}"));
                    }
                    self.rekey();
                }
            }
            "mls-commit" => {
                let (Some(commit), Some(epoch)) = (bytes("commit"), epoch) else { return };
                let Some(ours) = self.member.as_ref().and_then(Member::epoch) else {
                    return; // Not in the group yet: the welcome will cover it.
                };
                if epoch < ours {
                    return; // Already past it.
                }
                // The delivery service orders commits: another member's for
                // our epoch means ours (if any) lost.
                self.drop_pending();
                let applied = match self.member.as_mut() {
                    Some(member) if epoch == ours => member.process(&commit),
                    _ => Err(crate::membership::MlsError(format!("a commit from epoch {epoch}, this member is at {ours}"))),
                };
                match applied {
                    Ok(Applied::Epoch(_)) => self.rekey(),
                    Ok(Applied::Removed) => {
                        log(Level::Warn, "removed from the group while seated; rejoining");
                        self.start_over(false, out);
                    }
                    Err(e) => {
                        log(Level::Warn, &format!("out of step with the group ({e}); rejoining"));
                        self.start_over(false, out);
                    }
                }
            }
            "error" if text("code") == Some("stale-epoch") => {
                // The refusal names the room's epoch. A commit for that
                // epoch is never refused, so when ours is for it, the
                // refusal is of an older commit of ours (one that lost, and
                // that we dropped when the winner came): ours is still in
                // flight and may be accepted next.
                if epoch.is_none() || self.wishes.pending != epoch {
                    self.drop_pending();
                }
                let ours = self.member.as_ref().and_then(Member::epoch);
                if let (Some(ours), Some(room)) = (ours, epoch)
                    && room > ours
                {
                    log(Level::Warn, &format!("the room is at epoch {room}, this member at {ours}; rejoining"));
                    self.start_over(false, out);
                }
            }
            _ => return,
        }
        self.reconcile(out);
    }

    /// Publishes the keyring's counters, at most every 100 ms.
    fn publish(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.published) < 100_000_000 {
            return;
        }
        self.published = now_ns;
        let stats = self.ring.stats();
        for (name, value) in [
            ("frames-sealed", stats.sealed),
            ("frames-opened", stats.opened),
            ("frames-held", stats.held),
            ("frames-malformed", stats.malformed),
            ("frames-forged", stats.forged),
            ("frames-expired", stats.expired),
        ] {
            host::gauge_set(name, value as f64);
        }
        if let Some(epoch) = self.member.as_ref().and_then(Member::epoch) {
            host::gauge_set("mls-epoch", epoch as f64);
        }
    }

    /// The keyring's counters (for tests and benchmarks).
    pub fn stats(&self) -> KeyRingStats {
        self.ring.stats()
    }
}

impl Encryption for E2ee {
    fn control(&mut self, event: E2eeEvent, out: &mut Vec<String>) {
        match event {
            E2eeEvent::Seated { room, user, others, rejoined } => {
                // A new instance may have started (as a standby) before the
                // state it takes over was written: read it now.
                if !rejoined {
                    self.resume();
                }
                let seat = Seat { room, user };
                let kept = !rejoined
                    && self.wishes.seat.as_ref() == Some(&seat)
                    && self.member.as_ref().is_some_and(|m| m.epoch().is_some() || !others.is_empty());
                if kept {
                    self.reconcile(out);
                } else {
                    self.wishes.seat = Some(seat);
                    self.start_over(others.is_empty(), out);
                }
            }
            E2eeEvent::Message(text) => match serde_json::from_str::<Value>(&text) {
                Ok(message) => self.on_message(&message, out),
                Err(_) => log(Level::Debug, "a signaling message that is not JSON; ignored"),
            },
        }
    }

    fn seal(&mut self, _meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        match with_ring!(&mut self.ring, r => r.seal(b"", payload)) {
            Some(sealed) => {
                out.extend_from_slice(&sealed);
                Verdict::Keep
            }
            None => Verdict::Drop,
        }
    }

    fn open(&mut self, meta: &mut FrameMeta, payload: &[u8], out: &mut Payload<'_>) -> Verdict {
        let now = self.batch_time;
        match with_ring!(&mut self.ring, r => r.open(now, b"", payload, *meta)) {
            Opened::Frame(plain) => {
                out.extend_from_slice(&plain);
                Verdict::Keep
            }
            Opened::Held | Opened::Dropped(_) => Verdict::Drop,
        }
    }

    fn released(&mut self) -> Vec<(FrameMeta, Vec<u8>)> {
        let now_ns = host::monotonic_now();
        self.publish(now_ns);
        let now = Duration::from_nanos(now_ns);
        self.batch_time = now;
        with_ring!(&mut self.ring, r => if r.holds() { r.release(now) } else { Vec::new() })
    }

    fn status(&self) -> E2eeStatus {
        let member = self.member.as_ref();
        E2eeStatus {
            epoch: member.and_then(Member::epoch),
            safety_number: member.and_then(Member::safety_number).unwrap_or_default(),
            members: member.map(Member::members).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
#[path = "stage_tests.rs"]
mod tests;
