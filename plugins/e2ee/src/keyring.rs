//! SFrame keys for a room, epoch by epoch, as a sans-IO state machine.
//!
//! Each MLS epoch gives one base key (the MLS exporter, RFC 9605 §5.2).
//! Every sender encrypts under its own key id, `index << E | epoch mod 2^E`
//! ([`KID_BITS`]), so no two senders share a key and no coordination is
//! needed. The ring:
//!
//! - encrypts with this member's key for the current epoch;
//! - decrypts with the current epoch's keys and, for [`KeyRing::grace`]
//!   after a change, the previous epoch's (frames in flight when the group
//!   changed still play);
//! - buffers a frame under a key id it does not know yet (its sender moved
//!   to the next epoch a moment before this member did) for
//!   [`KeyRing::hold`], and releases it when the epoch arrives;
//! - drops and counts everything else that does not open.
//!
//! Time is an argument (`now`, from any fixed origin): tests drive it.
//! The crypto is a [`Backend`] (in the sandbox or by the host), and a held
//! frame carries a caller's tag `T` (which stream it came on, say) back
//! out of [`KeyRing::release`].

use crate::sframe_layer::{self, Backend, CipherSuite, DecryptionKey, EncryptionKey};
use sframe::mls::{MlsKeyId, MlsKeyIdBitRange};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// Key id layout: 8 bits of epoch, 16 bits of sender index (65536
/// members), the rest context (always 0: the shortest header).
pub const KID_BITS: (u8, u8) = (8, 16);

/// Frames held for an unknown key id, at most.
pub const MAX_HELD: usize = 256;

fn bit_range() -> MlsKeyIdBitRange {
    MlsKeyIdBitRange::new(KID_BITS.0, KID_BITS.1)
}

/// The key id `index` encrypts with at `epoch`.
pub fn kid(epoch: u64, index: u32) -> u64 {
    (u64::from(index) << KID_BITS.0) | (epoch & ((1 << KID_BITS.0) - 1))
}

struct EpochKeys {
    epoch: u64,
    base_key: Vec<u8>,
    /// Until when frames of this epoch still open (`None`: current).
    until: Option<Duration>,
}

/// What became of a frame handed to [`KeyRing::open`].
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    Frame(Vec<u8>),
    /// Held until its epoch's key arrives (see [`KeyRing::release`]).
    Held,
    Dropped(DropReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not an SFrame frame.
    Malformed,
    /// The key is known and the frame does not authenticate.
    Forged,
    /// Its epoch is over (past the grace window) or never came.
    Expired,
}

/// Counters for the stage's metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyRingStats {
    pub sealed: u64,
    pub opened: u64,
    pub held: u64,
    pub malformed: u64,
    pub forged: u64,
    pub expired: u64,
}

/// A frame waiting for its epoch.
struct Held<T> {
    at: Duration,
    kid: u64,
    metadata: Vec<u8>,
    frame: Vec<u8>,
    tag: T,
}

pub struct KeyRing<B: Backend, T = ()> {
    suite: CipherSuite,
    pub grace: Duration,
    pub hold: Duration,
    /// Current epoch last.
    epochs: VecDeque<EpochKeys>,
    own: Option<(EncryptionKey<B>, u64)>,
    counter: u64,
    decryption: HashMap<u64, DecryptionKey<B>>,
    held: VecDeque<Held<T>>,
    pub stats: KeyRingStats,
}

impl<B: Backend, T> KeyRing<B, T> {
    pub fn new(suite: CipherSuite, grace: Duration, hold: Duration) -> KeyRing<B, T> {
        KeyRing {
            suite,
            grace,
            hold,
            epochs: VecDeque::new(),
            own: None,
            counter: 0,
            decryption: HashMap::new(),
            held: VecDeque::new(),
            stats: KeyRingStats::default(),
        }
    }

    /// The length of base key the suite wants from the MLS exporter.
    pub fn base_key_len(&self) -> usize {
        self.suite.key_len()
    }

    /// The group moved to `epoch` with this base key; this member is
    /// sender `index`. The previous epoch's keys stay for the grace window.
    pub fn set_epoch(&mut self, now: Duration, epoch: u64, base_key: Vec<u8>, index: u32) -> Result<(), sframe_layer::SframeError> {
        let (encryption, _) = sframe_layer::keys::<B>(self.suite, kid(epoch, index), &base_key)?;
        if let Some(previous) = self.epochs.back_mut() {
            previous.until = Some(now + self.grace);
        }
        self.epochs.push_back(EpochKeys { epoch, base_key, until: None });
        self.own = Some((encryption, epoch));
        self.expire(now);
        Ok(())
    }

    /// Leaves: no epoch, no keys. Frames are neither sealed nor opened.
    pub fn clear(&mut self) {
        self.epochs.clear();
        self.own = None;
        self.decryption.clear();
        self.held.clear();
    }

    /// The current epoch.
    pub fn epoch(&self) -> Option<u64> {
        self.own.as_ref().map(|(_, e)| *e)
    }

    /// Seals an outgoing frame; `None` without a key (never in the clear).
    pub fn seal(&mut self, metadata: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
        let (key, _) = self.own.as_ref()?;
        let sealed = sframe_layer::seal(key, self.counter, metadata, payload).ok()?;
        self.counter += 1;
        self.stats.sealed += 1;
        Some(sealed)
    }

    /// Opens an incoming frame; `tag` comes back with it if it is held.
    pub fn open(&mut self, now: Duration, metadata: &[u8], frame: &[u8], tag: T) -> Opened {
        self.expire(now);
        let Ok((kid, _)) = sframe_layer::decode_header(frame) else {
            self.stats.malformed += 1;
            return Opened::Dropped(DropReason::Malformed);
        };
        if self.key(kid).is_some() {
            return self.decrypt(kid, metadata, frame);
        }
        if !self.is_ahead(kid) {
            self.stats.expired += 1;
            return Opened::Dropped(DropReason::Expired);
        }
        if self.held.len() >= MAX_HELD {
            self.held.pop_front();
            self.stats.expired += 1;
        }
        self.held.push_back(Held { at: now, kid, metadata: metadata.to_vec(), frame: frame.to_vec(), tag });
        self.stats.held += 1;
        Opened::Held
    }

    /// Opens a frame under `kid`, whose key is known.
    fn decrypt(&mut self, kid: u64, metadata: &[u8], frame: &[u8]) -> Opened {
        let Some(key) = self.key(kid) else {
            self.stats.expired += 1;
            return Opened::Dropped(DropReason::Expired);
        };
        match sframe_layer::open(key, metadata, frame) {
            Ok(payload) => {
                self.stats.opened += 1;
                Opened::Frame(payload)
            }
            Err(_) => {
                self.stats.forged += 1;
                Opened::Dropped(DropReason::Forged)
            }
        }
    }

    /// Held frames that open now (after [`KeyRing::set_epoch`]), in order;
    /// held frames past [`KeyRing::hold`] are dropped.
    pub fn release(&mut self, now: Duration) -> Vec<(T, Vec<u8>)> {
        self.expire(now);
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.held);
        for frame in held {
            if self.key(frame.kid).is_some() {
                if let Opened::Frame(payload) = self.decrypt(frame.kid, &frame.metadata, &frame.frame) {
                    out.push((frame.tag, payload));
                }
            } else {
                self.held.push_back(frame);
            }
        }
        out
    }

    /// Whether frames are waiting for their epoch.
    pub fn holds(&self) -> bool {
        !self.held.is_empty()
    }

    /// The decryption key for `kid`, derived once per key id from the
    /// base key of the epoch its low bits name (current or in grace).
    fn key(&mut self, kid: u64) -> Option<&DecryptionKey<B>> {
        if !self.decryption.contains_key(&kid) {
            let lsb = MlsKeyId::from_key_id(kid, bit_range()).epoch_lsb();
            let epoch = self.epochs.iter().rev().find(|e| e.epoch & ((1 << KID_BITS.0) - 1) == lsb)?;
            let (_, key) = sframe_layer::keys::<B>(self.suite, kid, &epoch.base_key).ok()?;
            self.decryption.insert(kid, key);
        }
        self.decryption.get(&kid)
    }

    /// Whether `kid` names the epoch after the current one.
    fn is_ahead(&self, kid: u64) -> bool {
        let lsb = MlsKeyId::from_key_id(kid, bit_range()).epoch_lsb();
        self.epoch().is_some_and(|e| (e + 1) & ((1 << KID_BITS.0) - 1) == lsb)
    }

    /// Forgets epochs past their grace (and their derived keys) and held
    /// frames past their hold.
    fn expire(&mut self, now: Duration) {
        let before = self.epochs.len();
        self.epochs.retain(|e| e.until.is_none_or(|until| now < until));
        if self.epochs.len() != before {
            let live: Vec<u64> = self.epochs.iter().map(|e| e.epoch & ((1 << KID_BITS.0) - 1)).collect();
            self.decryption.retain(|kid, _| live.contains(&MlsKeyId::from_key_id(*kid, bit_range()).epoch_lsb()));
        }
        let hold = self.hold;
        let held = self.held.len();
        self.held.retain(|h| now.saturating_sub(h.at) < hold);
        self.stats.expired += (held - self.held.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sframe_layer::Pure;

    const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;
    const GRACE: Duration = Duration::from_secs(2);
    const HOLD: Duration = Duration::from_millis(500);

    fn ring() -> KeyRing<Pure> {
        KeyRing::new(SUITE, GRACE, HOLD)
    }

    fn base(epoch: u64) -> Vec<u8> {
        vec![epoch as u8 ^ 0x5a; 16]
    }

    #[test]
    fn senders_have_their_own_keys_and_receivers_open_every_one() {
        let t = Duration::ZERO;
        let (mut a, mut b, mut c) = (ring(), ring(), ring());
        a.set_epoch(t, 1, base(1), 0).unwrap();
        b.set_epoch(t, 1, base(1), 1).unwrap();
        c.set_epoch(t, 1, base(1), 2).unwrap();
        let from_a = a.seal(b"meta", b"hello").unwrap();
        let from_b = b.seal(b"meta", b"hello").unwrap();
        assert_ne!(sframe_layer::decode_header(&from_a).unwrap().0, sframe_layer::decode_header(&from_b).unwrap().0);
        assert_eq!(c.open(t, b"meta", &from_a, ()), Opened::Frame(b"hello".to_vec()));
        assert_eq!(c.open(t, b"meta", &from_b, ()), Opened::Frame(b"hello".to_vec()));
        assert_eq!(c.open(t, b"other", &from_b, ()), Opened::Dropped(DropReason::Forged), "metadata is authenticated");
        assert_eq!(c.open(t, b"", b"", ()), Opened::Dropped(DropReason::Malformed));
    }

    #[test]
    fn the_previous_epoch_opens_for_the_grace_window_only() {
        let t = Duration::ZERO;
        let (mut a, mut b) = (ring(), ring());
        a.set_epoch(t, 1, base(1), 0).unwrap();
        b.set_epoch(t, 1, base(1), 1).unwrap();
        let old = a.seal(b"", b"late").unwrap();
        b.set_epoch(t, 2, base(2), 1).unwrap();
        assert_eq!(b.open(t + GRACE / 2, b"", &old, ()), Opened::Frame(b"late".to_vec()));
        assert_eq!(b.open(t + GRACE * 2, b"", &old, ()), Opened::Dropped(DropReason::Expired));
    }

    #[test]
    fn a_frame_from_the_next_epoch_is_held_until_the_epoch_arrives() {
        let t = Duration::ZERO;
        let (mut a, mut b) = (ring(), ring());
        a.set_epoch(t, 1, base(1), 0).unwrap();
        b.set_epoch(t, 1, base(1), 1).unwrap();
        a.set_epoch(t, 2, base(2), 0).unwrap();
        let early = a.seal(b"", b"early").unwrap();
        assert_eq!(b.open(t, b"", &early, ()), Opened::Held);
        assert!(b.release(t).is_empty(), "still on epoch 1");
        b.set_epoch(t + HOLD / 2, 2, base(2), 1).unwrap();
        assert_eq!(b.release(t + HOLD / 2), vec![((), b"early".to_vec())]);
        // Held too long: dropped and counted.
        a.set_epoch(t, 3, base(3), 0).unwrap();
        let too_early = a.seal(b"", b"x").unwrap();
        assert_eq!(b.open(t + HOLD, b"", &too_early, ()), Opened::Held);
        b.set_epoch(t + HOLD * 3, 3, base(3), 1).unwrap();
        assert!(b.release(t + HOLD * 3).is_empty());
        assert_eq!(b.stats.expired, 1);
    }

    #[test]
    fn without_a_key_nothing_is_sealed_and_a_leaver_opens_nothing_new() {
        let t = Duration::ZERO;
        let mut nobody = ring();
        assert_eq!(nobody.seal(b"", b"secret"), None, "never in the clear, never at all");
        let (mut a, mut leaver) = (ring(), ring());
        a.set_epoch(t, 1, base(1), 0).unwrap();
        leaver.set_epoch(t, 1, base(1), 1).unwrap();
        // The leaver is removed: the others move to epoch 2 without it.
        a.set_epoch(t, 2, base(2), 0).unwrap();
        let after = a.seal(b"", b"after").unwrap();
        // Epoch 2 is "next" to the leaver, so it holds the frame, which
        // never opens: its key never comes.
        assert_eq!(leaver.open(t, b"", &after, ()), Opened::Held);
        assert!(leaver.release(t + HOLD * 2).is_empty());
        assert_eq!(leaver.stats.opened, 0);
    }
}

#[cfg(test)]
mod with_mls {
    use super::*;
    use crate::membership::Member;
    use crate::sframe_layer::Pure;

    fn keyed(member: &Member, ring: &mut KeyRing<Pure>, now: Duration) {
        let base = member.sframe_base_key(ring.base_key_len()).unwrap();
        ring.set_epoch(now, member.epoch().unwrap(), base, member.leaf_index().unwrap()).unwrap();
    }

    /// Keys from a real MLS group: members open each other's frames; after
    /// a removal the removed member opens none of the new epoch's.
    #[test]
    fn mls_epochs_key_the_frames() {
        let t = Duration::ZERO;
        let mut alice = Member::new("alice").unwrap();
        alice.create_group("room").unwrap();
        let mut bob = Member::new("bob").unwrap();
        let commit = alice.add(&[bob.key_package().unwrap()]).unwrap().unwrap();
        alice.confirm().unwrap();
        bob.join(commit.welcome.as_deref().unwrap()).unwrap();
        let (mut ra, mut rb) = (
            KeyRing::<Pure>::new(CipherSuite::AesGcm128Sha256, Duration::ZERO, Duration::ZERO),
            KeyRing::<Pure>::new(CipherSuite::AesGcm128Sha256, Duration::ZERO, Duration::ZERO),
        );
        keyed(&alice, &mut ra, t);
        keyed(&bob, &mut rb, t);
        let frame = ra.seal(b"", b"opus frame").unwrap();
        assert_eq!(rb.open(t, b"", &frame, ()), Opened::Frame(b"opus frame".to_vec()));
        let back = rb.seal(b"", b"reply").unwrap();
        assert_eq!(ra.open(t, b"", &back, ()), Opened::Frame(b"reply".to_vec()));

        let commit = alice.remove(&["bob"]).unwrap().unwrap();
        alice.confirm().unwrap();
        keyed(&alice, &mut ra, t);
        let _ = bob.process(&commit.commit);
        let after = ra.seal(b"", b"after bob").unwrap();
        assert!(!matches!(rb.open(t, b"", &after, ()), Opened::Frame(_)), "bob keeps only the old epoch's key");
        assert!(rb.release(t + Duration::from_secs(1)).is_empty());
    }
}
