//! One participant's view of a room's MLS group (RFC 9420, openmls).
//!
//! Every membership change here is idempotent and none can reach openmls
//! with an empty list: the seed's E2EE worker died of exactly that (a
//! `userLeft` for someone with no leaf became `remove_members(&[])`, an
//! `EmptyInput` error, an `expect` panic under a global mutex, and every
//! call after it failed). So:
//!
//! - [`Member::add`] skips key packages that do not parse or whose user is
//!   already in the group; [`Member::remove`] skips users who have no leaf
//!   (never joined, already left, unknown). When nothing is left to do they
//!   return `Ok(None)` and openmls is not called.
//! - Nothing here panics on what a peer sent: every parse and every openmls
//!   call returns an error.
//!
//! A member survives its process (or plugin instance): [`Member::save`]
//! gives bytes for the host state store, [`Member::restore`] resumes from
//! them, or fails, and then the member rejoins with a fresh key package.
//!
//! Commits wait for the delivery service: a commit this member makes stays
//! pending until [`Member::confirm`] (the node accepted it: it is the first
//! for its epoch) or [`Member::rejected`] (another commit won: discard
//! this one, process the winner, and try again on the new epoch).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use serde::{Deserialize, Serialize};

/// MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519: AES-128-GCM like the
/// SFrame suite it keys.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

/// The MLS exporter label for SFrame base keys (RFC 9605 §5.2).
pub const SFRAME_LABEL: &str = "SFrame 1.0 Base Key";

/// What went wrong, for a log line or an error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlsError(pub String);

impl std::fmt::Display for MlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(context: &str, e: impl std::fmt::Debug) -> MlsError {
    MlsError(format!("{context}: {e:?}"))
}

/// A commit for the delivery service, made on `epoch`.
#[derive(Debug, Clone)]
pub struct Commit {
    pub epoch: u64,
    pub commit: Vec<u8>,
    /// For the members it adds.
    pub welcome: Option<Vec<u8>>,
    /// The users it adds (who get the welcome rather than the commit).
    pub joiners: Vec<String>,
}

/// What a processed handshake message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The group moved to this epoch.
    Epoch(u64),
    /// This member was removed: it has no group now.
    Removed,
}

/// What [`Member::save`] writes: identity, keys and openmls's whole store
/// (the group, its epoch secrets, unused key packages' private keys).
#[derive(Deserialize)]
struct Saved {
    user: String,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<GroupId>,
    /// openmls's storage, key and value base64.
    storage: Vec<(String, String)>,
}

/// [`Saved`], borrowed, for writing.
#[derive(Serialize)]
struct SavedRef<'a> {
    user: &'a str,
    signer: &'a SignatureKeyPair,
    credential: &'a CredentialWithKey,
    group: Option<&'a GroupId>,
    storage: Vec<(String, String)>,
}

/// One participant: its signing key, credential and (once created or
/// joined) its group.
pub struct Member {
    user: String,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group: Option<MlsGroup>,
}

fn group_config() -> MlsGroupCreateConfig {
    // The ratchet tree travels in the welcome: a joiner needs nothing else.
    MlsGroupCreateConfig::builder().ciphersuite(CIPHERSUITE).use_ratchet_tree_extension(true).build()
}

fn serialize(message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message.tls_serialize_detached().map_err(|e| err("cannot encode an MLS message", e))
}

fn parse(bytes: &[u8]) -> Result<MlsMessageBodyIn, MlsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| err("not an MLS message", e))?;
    Ok(message.extract())
}

impl Member {
    pub fn new(user: &str) -> Result<Member, MlsError> {
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(|e| err("cannot make a signing key", e))?;
        let credential = CredentialWithKey {
            credential: BasicCredential::new(user.as_bytes().to_vec()).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Ok(Member { user: user.to_string(), provider: OpenMlsRustCrypto::default(), signer, credential, group: None })
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    /// Everything needed to resume after a crash, for the host state store.
    pub fn save(&self) -> Result<Vec<u8>, MlsError> {
        let values = self.provider.storage().values.read().map_err(|_| MlsError("the store is poisoned".into()))?;
        let storage = values.iter().map(|(k, v)| (B64.encode(k), B64.encode(v))).collect();
        let saved = SavedRef {
            user: &self.user,
            signer: &self.signer,
            credential: &self.credential,
            group: self.group.as_ref().map(openmls::group::MlsGroup::group_id),
            storage,
        };
        serde_json::to_vec(&saved).map_err(|e| err("cannot save", e))
    }

    /// Resumes from [`Member::save`]'s bytes. An error means they cannot be
    /// used: start over with [`Member::new`] and a fresh key package.
    pub fn restore(bytes: &[u8]) -> Result<Member, MlsError> {
        let saved: Saved = serde_json::from_slice(bytes).map_err(|e| err("not a saved member", e))?;
        let provider = OpenMlsRustCrypto::default();
        {
            let mut values = provider.storage().values.write().map_err(|_| MlsError("the store is poisoned".into()))?;
            for (k, v) in saved.storage {
                let (k, v) = (B64.decode(k).map_err(|e| err("bad saved key", e))?, B64.decode(v).map_err(|e| err("bad saved value", e))?);
                values.insert(k, v);
            }
        }
        let group = match &saved.group {
            None => None,
            Some(id) => Some(
                MlsGroup::load(provider.storage(), id)
                    .map_err(|e| err("cannot load the group", e))?
                    .ok_or_else(|| MlsError("the saved group is missing".into()))?,
            ),
        };
        Ok(Member { user: saved.user, provider, signer: saved.signer, credential: saved.credential, group })
    }

    /// A fresh key package for someone to add this member with.
    pub fn key_package(&self) -> Result<Vec<u8>, MlsError> {
        let bundle = KeyPackage::builder()
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
            .map_err(|e| err("cannot make a key package", e))?;
        serialize(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// Starts the room's group with this member alone in it.
    pub fn create_group(&mut self, room: &str) -> Result<(), MlsError> {
        let group = MlsGroup::builder()
            .with_group_id(GroupId::from_slice(room.as_bytes()))
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .build(&self.provider, &self.signer, self.credential.clone())
            .map_err(|e| err("cannot create the group", e))?;
        self.group = Some(group);
        Ok(())
    }

    /// Joins from a welcome.
    pub fn join(&mut self, welcome: &[u8]) -> Result<(), MlsError> {
        let MlsMessageBodyIn::Welcome(welcome) = parse(welcome)? else {
            return Err(MlsError("expected a welcome".into()));
        };
        let group = StagedWelcome::new_from_welcome(&self.provider, group_config().join_config(), welcome, None)
            .map_err(|e| err("cannot use the welcome", e))?
            .into_group(&self.provider)
            .map_err(|e| err("cannot join from the welcome", e))?;
        self.group = Some(group);
        Ok(())
    }

    /// The users in the group, this member included.
    pub fn members(&self) -> Vec<String> {
        let Some(group) = &self.group else { return Vec::new() };
        group.members().map(|m| String::from_utf8_lossy(m.credential.serialized_content()).into_owned()).collect()
    }

    /// Adds the owners of `key_packages` (see [`Member::change`]).
    pub fn add(&mut self, key_packages: &[Vec<u8>]) -> Result<Option<Commit>, MlsError> {
        self.change(key_packages, &[])
    }

    /// Removes `users` (see [`Member::change`]).
    pub fn remove(&mut self, users: &[&str]) -> Result<Option<Commit>, MlsError> {
        self.change(&[], users)
    }

    /// One commit that adds the owners of `key_packages` and removes
    /// `departed`. `Ok(None)`: nothing to do, and openmls is not called.
    ///
    /// - A key package that does not parse or validate is skipped, and so is
    ///   one whose owner is already in the group with the same signature
    ///   key (a duplicate). One whose owner is in the group with another key
    ///   is a rejoin (a restart that lost its state): the old leaf is
    ///   removed and the new one added, in the same commit.
    /// - A departed user without a leaf (never joined, already gone,
    ///   unknown), and this member itself, are skipped.
    pub fn change(&mut self, key_packages: &[Vec<u8>], departed: &[&str]) -> Result<Option<Commit>, MlsError> {
        let own = self.user.clone();
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().ok_or_else(|| MlsError("not in a group".into()))?;
        let leaves: Vec<(String, LeafNodeIndex, Vec<u8>)> = group
            .members()
            .map(|m| (String::from_utf8_lossy(m.credential.serialized_content()).into_owned(), m.index, m.signature_key))
            .collect();
        let mut removals: Vec<LeafNodeIndex> =
            leaves.iter().filter(|(user, _, _)| *user != own && departed.contains(&user.as_str())).map(|(_, index, _)| *index).collect();
        let mut adds: Vec<KeyPackage> = Vec::new();
        for bytes in key_packages {
            let Ok(MlsMessageBodyIn::KeyPackage(package)) = parse(bytes) else { continue };
            let Ok(package) = package.validate(provider.crypto(), ProtocolVersion::Mls10) else { continue };
            let leaf = package.leaf_node();
            let user = String::from_utf8_lossy(leaf.credential().serialized_content()).into_owned();
            let key = leaf.signature_key().as_slice();
            let duplicate = adds.iter().any(|p| p.leaf_node().credential() == leaf.credential())
                || leaves.iter().any(|(u, _, k)| *u == user && k.as_slice() == key);
            if user == own || duplicate {
                continue;
            }
            removals.extend(leaves.iter().filter(|(u, _, _)| *u == user).map(|(_, index, _)| *index));
            adds.push(package);
        }
        removals.sort();
        removals.dedup();
        if adds.is_empty() && removals.is_empty() {
            return Ok(None);
        }
        let epoch = group.epoch().as_u64();
        let joiners = adds.iter().map(|p| String::from_utf8_lossy(p.leaf_node().credential().serialized_content()).into_owned()).collect();
        let bundle = group
            .commit_builder()
            .propose_adds(adds)
            .propose_removals(removals)
            .load_psks(provider.storage())
            .map_err(|e| err("cannot load PSKs", e))?
            .build(provider.rand(), provider.crypto(), signer, |_| true)
            .map_err(|e| err("cannot build the commit", e))?
            .stage_commit(provider)
            .map_err(|e| err("cannot stage the commit", e))?;
        let welcome = bundle.to_welcome_msg().map(|w| serialize(&w)).transpose()?;
        let (commit, _, _) = bundle.into_contents();
        Ok(Some(Commit { epoch, commit: serialize(&commit)?, welcome, joiners }))
    }

    /// Whether this member has a commit waiting for the delivery service.
    pub fn has_pending_commit(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.pending_commit().is_some())
    }

    /// The delivery service accepted this member's pending commit.
    pub fn confirm(&mut self) -> Result<u64, MlsError> {
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or_else(|| MlsError("not in a group".into()))?;
        group.merge_pending_commit(provider).map_err(|e| err("cannot merge the commit", e))?;
        Ok(group.epoch().as_u64())
    }

    /// Another commit won the epoch: drop this member's pending one.
    pub fn rejected(&mut self) -> Result<(), MlsError> {
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or_else(|| MlsError("not in a group".into()))?;
        group.clear_pending_commit(provider.storage()).map_err(|e| err("cannot drop the pending commit", e))
    }

    /// Applies another member's commit (as ordered by the delivery service).
    pub fn process(&mut self, message: &[u8]) -> Result<Applied, MlsError> {
        let message = match parse(message)? {
            MlsMessageBodyIn::PublicMessage(m) => ProtocolMessage::from(m),
            MlsMessageBodyIn::PrivateMessage(m) => ProtocolMessage::from(m),
            _ => return Err(MlsError("expected a commit".into())),
        };
        let provider = &self.provider;
        let group = self.group.as_mut().ok_or_else(|| MlsError("not in a group".into()))?;
        let processed = group.process_message(provider, message).map_err(|e| err("cannot process the message", e))?;
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(MlsError("expected a commit".into()));
        };
        group.merge_staged_commit(provider, *staged).map_err(|e| err("cannot merge the commit", e))?;
        if !group.is_active() {
            self.group = None;
            return Ok(Applied::Removed);
        }
        Ok(Applied::Epoch(group.epoch().as_u64()))
    }

    pub fn epoch(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.epoch().as_u64())
    }

    /// The epoch authenticator: equal for every member on the same epoch of
    /// the same group; shown to users as a safety number.
    pub fn safety_number(&self) -> Option<Vec<u8>> {
        self.group.as_ref().map(|g| g.epoch_authenticator().as_slice().to_vec())
    }

    /// This epoch's SFrame base key (RFC 9605 §5.2), `len` bytes.
    pub fn sframe_base_key(&self, len: usize) -> Result<Vec<u8>, MlsError> {
        let group = self.group.as_ref().ok_or_else(|| MlsError("not in a group".into()))?;
        group.export_secret(self.provider.crypto(), SFRAME_LABEL, b"", len).map_err(|e| err("cannot export the base key", e))
    }

    /// This member's leaf index (its SFrame sender index).
    pub fn leaf_index(&self) -> Option<u32> {
        self.group.as_ref().map(|g| g.own_leaf_index().u32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room: its members and a delivery service that accepts the first
    /// commit for each epoch and relays it to everyone else.
    struct Room {
        members: Vec<Member>,
        epoch: u64,
    }

    impl Room {
        fn new(creator: &str) -> Room {
            let mut first = Member::new(creator).unwrap();
            first.create_group("room").unwrap();
            Room { members: vec![first], epoch: 0 }
        }

        fn index(&self, user: &str) -> usize {
            self.members.iter().position(|m| m.user() == user).unwrap()
        }

        /// Delivers a commit made by `author`: accepted if it is for the
        /// current epoch (then merged by its author and processed by the
        /// rest), rejected otherwise.
        fn deliver(&mut self, author: usize, commit: Commit) -> bool {
            if commit.epoch != self.epoch {
                self.members[author].rejected().unwrap();
                return false;
            }
            self.epoch = self.members[author].confirm().unwrap();
            let mut removed = Vec::new();
            for (i, m) in self.members.iter_mut().enumerate() {
                if i != author && m.epoch().is_some() && m.process(&commit.commit).unwrap() == Applied::Removed {
                    removed.push(i);
                }
            }
            if let Some(welcome) = &commit.welcome {
                for m in self.members.iter_mut().filter(|m| m.epoch().is_none()) {
                    m.join(welcome).unwrap();
                }
            }
            for i in removed.into_iter().rev() {
                self.members.remove(i);
            }
            true
        }

        fn join(&mut self, user: &str) {
            let newcomer = Member::new(user).unwrap();
            let package = newcomer.key_package().unwrap();
            self.members.push(newcomer);
            let commit = self.members[0].add(&[package]).unwrap().expect("a commit");
            assert!(self.deliver(0, commit));
        }

        fn leave(&mut self, users: &[&str]) -> bool {
            match self.members[0].remove(users).unwrap() {
                Some(commit) => self.deliver(0, commit),
                None => false,
            }
        }

        /// Everyone on the same epoch with the same safety number and key.
        fn agree(&self) {
            let first = &self.members[0];
            for m in &self.members {
                assert_eq!(m.epoch(), Some(self.epoch), "{}", m.user());
                assert_eq!(m.safety_number(), first.safety_number(), "{}", m.user());
                assert_eq!(m.sframe_base_key(16).unwrap(), first.sframe_base_key(16).unwrap());
            }
        }
    }

    #[test]
    fn members_join_and_agree_on_epoch_safety_number_and_key() {
        let mut room = Room::new("alice");
        room.join("bob");
        room.join("carol");
        room.agree();
        assert_eq!(room.members[0].members(), ["alice", "bob", "carol"]);
    }

    /// The seed's crash: a `userLeft` for a member with no leaf.
    #[test]
    fn leaving_is_idempotent_and_never_reaches_openmls_empty() {
        let mut room = Room::new("alice");
        room.join("bob");
        let epoch = room.epoch;
        assert!(!room.leave(&["ghost"]), "an unknown member: no commit");
        assert!(!room.leave(&[]), "nobody: no commit");
        assert!(!room.leave(&["alice"]), "not oneself");
        assert_eq!(room.epoch, epoch);
        assert!(room.leave(&["bob"]));
        assert!(!room.leave(&["bob"]), "leaving twice");
        assert!(!room.leave(&["dave"]), "leaving before joining");
        room.agree();
        // And the group still works: dave joins.
        room.join("dave");
        room.agree();
    }

    #[test]
    fn many_simultaneous_leaves_are_one_commit() {
        let mut room = Room::new("alice");
        for u in ["bob", "carol", "dave", "erin"] {
            room.join(u);
        }
        let epoch = room.epoch;
        assert!(room.leave(&["bob", "carol", "ghost", "bob", "erin"]));
        assert_eq!(room.epoch, epoch + 1);
        assert_eq!(room.members[0].members(), ["alice", "dave"]);
        room.agree();
    }

    #[test]
    fn twenty_rapid_joins_and_leaves_end_in_agreement() {
        let mut room = Room::new("alice");
        room.join("bob");
        for i in 0..20 {
            let user = format!("guest{i}");
            room.join(&user);
            if i % 2 == 1 {
                // Every other round, the two newest guests leave at once.
                let older = format!("guest{}", i - 1);
                assert!(room.leave(&[&user, &older]));
            }
        }
        room.agree();
        assert_eq!(room.members.len(), 2);
    }

    /// Two members commit on the same epoch: the first wins; the loser
    /// drops its commit, applies the winner's, and succeeds on retry.
    #[test]
    fn the_first_commit_for_an_epoch_wins_and_the_loser_retries() {
        let mut room = Room::new("alice");
        room.join("bob");
        let carol = Member::new("carol").unwrap();
        let dave = Member::new("dave").unwrap();
        let (carol_kp, dave_kp) = (carol.key_package().unwrap(), dave.key_package().unwrap());
        room.members.push(carol);
        let from_alice = room.members[0].add(&[carol_kp]).unwrap().expect("commit");
        let bob = room.index("bob");
        let from_bob = room.members[bob].add(std::slice::from_ref(&dave_kp)).unwrap().expect("commit");
        assert!(room.deliver(0, from_alice));
        assert!(!room.deliver(bob, from_bob), "same epoch: rejected");
        room.members.push(dave);
        let retry = room.members[bob].add(&[dave_kp]).unwrap().expect("commit");
        assert!(room.deliver(bob, retry));
        room.agree();
        assert_eq!(room.members.len(), 4);
    }

    #[test]
    fn a_member_who_left_cannot_derive_the_next_key() {
        let mut room = Room::new("alice");
        room.join("bob");
        room.join("carol");
        let bob_key = room.members[room.index("bob")].sframe_base_key(16).unwrap();
        let bob_member = room.members.remove(room.index("bob"));
        // Alice removes bob; he gets the commit too, and learns he is out.
        let commit = room.members[0].remove(&["bob"]).unwrap().expect("commit");
        let mut bob_member = bob_member;
        assert!(room.deliver(0, commit.clone()));
        assert_eq!(bob_member.process(&commit.commit), Ok(Applied::Removed));
        assert!(bob_member.sframe_base_key(16).is_err(), "no group, no key");
        assert_ne!(room.members[0].sframe_base_key(16).unwrap(), bob_key, "the key moved on");
        room.agree();
    }

    /// A member that crashes resumes from its saved state and follows the
    /// group; one that crashed before its welcome arrived can still join
    /// with the key package it had published; a damaged save is an error.
    #[test]
    fn a_saved_member_resumes_after_a_crash() {
        let mut room = Room::new("alice");
        room.join("bob");
        let bob = room.index("bob");
        let saved = room.members[bob].save().unwrap();
        room.members.remove(bob);
        room.members.push(Member::restore(&saved).unwrap());
        room.join("carol");
        room.agree();

        let dave = Member::new("dave").unwrap();
        let package = dave.key_package().unwrap();
        let saved = dave.save().unwrap();
        drop(dave);
        room.members.push(Member::restore(&saved).unwrap());
        let commit = room.members[0].add(&[package]).unwrap().unwrap();
        assert!(room.deliver(0, commit));
        room.agree();

        assert!(Member::restore(b"{}").is_err());
        let mut damaged = room.members[0].save().unwrap();
        damaged.truncate(damaged.len() / 2);
        assert!(Member::restore(&damaged).is_err());
    }

    /// A member that lost its state rejoins under the same name with a
    /// fresh key package: its old leaf is replaced in one commit; the same
    /// key package again is a duplicate (no commit).
    #[test]
    fn a_rejoin_with_a_fresh_key_package_replaces_the_old_leaf() {
        let mut room = Room::new("alice");
        room.join("bob");
        room.join("carol");
        let bob = room.index("bob");
        room.members.remove(bob);
        let fresh = Member::new("bob").unwrap();
        let package = fresh.key_package().unwrap();
        room.members.push(fresh);
        let commit = room.members[0].change(std::slice::from_ref(&package), &[]).unwrap().expect("a replacing commit");
        assert!(room.deliver(0, commit));
        room.agree();
        assert_eq!(room.members[0].members().len(), 3, "bob once, not twice");
        assert!(room.members[0].add(&[package]).unwrap().is_none(), "the same package again: nothing to do");
        // Adds and removes in one commit: dave in, carol out.
        let dave = Member::new("dave").unwrap();
        let package = dave.key_package().unwrap();
        room.members.push(dave);
        let commit = room.members[0].change(&[package], &["carol", "ghost"]).unwrap().expect("a commit");
        let carol = room.index("carol");
        room.members.remove(carol);
        assert!(room.deliver(0, commit));
        room.agree();
        let mut users = room.members[0].members();
        users.sort();
        assert_eq!(users, ["alice", "bob", "dave"]);
    }

    #[test]
    fn garbage_from_peers_is_an_error_not_a_panic() {
        let mut room = Room::new("alice");
        assert!(room.members[0].add(&[vec![1, 2, 3], Vec::new()]).unwrap().is_none());
        assert!(room.members[0].process(&[0xff; 40]).is_err());
        let mut loner = Member::new("loner").unwrap();
        assert!(loner.join(b"not a welcome").is_err());
        assert!(loner.remove(&["x"]).is_err(), "not in a group: an error, not a panic");
    }
}
