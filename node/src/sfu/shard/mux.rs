//! Which peer connection a datagram on the shared media port is for.
//!
//! Every peer connection of the node receives on one UDP port, so a
//! datagram names no connection. Two things identify it:
//!
//! - a STUN binding request carries `USERNAME` = "<our ufrag>:<their
//!   ufrag>" (RFC 8445 §7.2.2), and each connection has a ufrag of its own
//!   (registered with [`Mux::add`] when the connection is made);
//! - everything else (DTLS, SRTP, SRTCP, STUN responses) is known only by
//!   the address it came from. An address is bound to a connection when a
//!   binding request naming it comes from there (the peer's checks) or when
//!   the connection sends there (our checks, whose responses come back).
//!
//! Whether the request is genuine is the connection's business (it checks
//! `MESSAGE-INTEGRITY`); the mux only routes. So that a peer that sprays
//! requests from many ports cannot grow the table, each connection keeps
//! its [`MAX_ADDRESSES`] most recent addresses. Sans-IO: no sockets, no
//! clock; the shard calls it per datagram.

use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::message::{BINDING_REQUEST, Message};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;

/// Addresses kept per connection (ICE may try a few before one wins).
pub const MAX_ADDRESSES: usize = 8;

/// The demultiplexer: ufrags and addresses to connections `P`.
#[derive(Debug)]
pub struct Mux<P> {
    by_ufrag: HashMap<String, P>,
    by_address: HashMap<SocketAddr, P>,
    /// Per connection: its ufrag and its addresses, oldest first.
    of: HashMap<P, (String, Vec<SocketAddr>)>,
    /// Datagrams no connection claimed.
    pub unclaimed: u64,
}

impl<P> Default for Mux<P> {
    fn default() -> Self {
        Mux { by_ufrag: HashMap::new(), by_address: HashMap::new(), of: HashMap::new(), unclaimed: 0 }
    }
}

impl<P: Copy + Eq + Hash> Mux<P> {
    /// Registers `peer` under its local `ufrag` (again after an ICE restart:
    /// the old ufrag goes, its addresses stay until ICE moves). Returns the
    /// ufrag it replaced.
    pub fn add(&mut self, peer: P, ufrag: &str) -> Option<String> {
        let entry = self.of.entry(peer).or_insert_with(|| (String::new(), Vec::new()));
        if entry.0 == ufrag {
            return None;
        }
        let old = std::mem::replace(&mut entry.0, ufrag.to_string());
        self.by_ufrag.insert(ufrag.to_string(), peer);
        if old.is_empty() {
            return None;
        }
        self.by_ufrag.remove(&old);
        Some(old)
    }

    /// Forgets `peer`: its ufrag and every address bound to it.
    pub fn remove(&mut self, peer: P) {
        if let Some((ufrag, addresses)) = self.of.remove(&peer) {
            self.by_ufrag.remove(&ufrag);
            for a in addresses {
                self.by_address.remove(&a);
            }
        }
    }

    /// The connection `datagram` from `from` is for, learning the address
    /// from a binding request that names a known ufrag.
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<P> {
        if let Some(ufrag) = binding_request_ufrag(datagram)
            && let Some(&peer) = self.by_ufrag.get(&ufrag)
        {
            self.bind(peer, from);
            return Some(peer);
        }
        let found = self.by_address.get(&from).copied();
        if found.is_none() {
            self.unclaimed += 1;
        }
        found
    }

    /// `peer` sent to `to`: what comes back from there is its.
    pub fn sent(&mut self, peer: P, to: SocketAddr) {
        if self.by_address.get(&to) != Some(&peer) {
            self.bind(peer, to);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }

    fn bind(&mut self, peer: P, address: SocketAddr) {
        // The address leaves whoever had it (a port the OS gave again).
        if let Some(previous) = self.by_address.insert(address, peer)
            && previous != peer
            && let Some((_, addresses)) = self.of.get_mut(&previous)
        {
            addresses.retain(|a| *a != address);
        }
        let Some((_, addresses)) = self.of.get_mut(&peer) else {
            // Not registered (removed meanwhile): no binding either.
            self.by_address.remove(&address);
            return;
        };
        addresses.retain(|a| *a != address);
        addresses.push(address);
        if addresses.len() > MAX_ADDRESSES {
            let oldest = addresses.remove(0);
            self.by_address.remove(&oldest);
        }
    }
}

/// The local ufrag a STUN binding request is for (the part of `USERNAME`
/// before the colon), if `datagram` is one.
pub fn binding_request_ufrag(datagram: &[u8]) -> Option<String> {
    // RFC 7983: STUN starts with 0..=3; a binding request with 0x00 0x01.
    if datagram.len() < 20 || datagram[0] != 0x00 || datagram[1] != 0x01 {
        return None;
    }
    let mut message = Message::new();
    message.unmarshal_binary(datagram).ok()?;
    if message.typ != BINDING_REQUEST {
        return None;
    }
    let username = message.get(ATTR_USERNAME).ok()?;
    let username = std::str::from_utf8(&username).ok()?;
    let (ours, _theirs) = username.split_once(':')?;
    Some(ours.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::TransactionId;
    use rtc::stun::textattrs::Username;

    fn request(username: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[
            Box::<TransactionId>::default(),
            Box::new(BINDING_REQUEST),
            Box::new(Username::new(ATTR_USERNAME, username.to_string())),
        ])
        .unwrap();
        m.raw
    }

    fn at(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_binding_request_binds_its_address_and_the_rest_follows() {
        let mut mux = Mux::default();
        mux.add(1u64, "aaaa");
        mux.add(2u64, "bbbb");
        let srtp = [0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(mux.route(at(5000), &srtp), None, "nobody's address yet");
        assert_eq!(mux.route(at(5000), &request("bbbb:remote")), Some(2));
        assert_eq!(mux.route(at(5000), &srtp), Some(2));
        assert_eq!(mux.route(at(6000), &request("cccc:remote")), None, "an unknown ufrag");
        assert_eq!(mux.route(at(6000), &srtp), None);
        assert_eq!(mux.unclaimed, 3);
    }

    #[test]
    fn what_a_connection_sent_to_comes_back_to_it() {
        let mut mux = Mux::default();
        mux.add(7u64, "aaaa");
        mux.sent(7, at(5000));
        assert_eq!(mux.route(at(5000), &[0x00, 0x01, 0x00, 0x00]), Some(7));
    }

    #[test]
    fn removing_forgets_the_ufrag_and_every_address() {
        let mut mux = Mux::default();
        mux.add(1u64, "aaaa");
        mux.route(at(5000), &request("aaaa:x"));
        mux.sent(1, at(5001));
        mux.remove(1);
        assert!(mux.is_empty());
        assert_eq!(mux.route(at(5000), &[0x80, 0]), None);
        assert_eq!(mux.route(at(5001), &[0x80, 0]), None);
        assert_eq!(mux.route(at(5002), &request("aaaa:x")), None);
        assert!(mux.by_address.is_empty());
    }

    #[test]
    fn a_peer_spraying_ports_keeps_only_its_latest_addresses() {
        let mut mux = Mux::default();
        mux.add(1u64, "aaaa");
        for port in 0..1000 {
            mux.route(at(10_000 + port), &request("aaaa:x"));
        }
        assert_eq!(mux.by_address.len(), MAX_ADDRESSES);
        assert_eq!(mux.route(at(10_999), &[0x80, 0]), Some(1));
        assert_eq!(mux.route(at(10_000), &[0x80, 0]), None);
    }

    #[test]
    fn an_ice_restart_replaces_the_ufrag() {
        let mut mux = Mux::default();
        assert_eq!(mux.add(1u64, "old"), None);
        assert_eq!(mux.add(1u64, "new").as_deref(), Some("old"));
        assert_eq!(mux.add(1u64, "new"), None, "the same again replaces nothing");
        assert_eq!(mux.route(at(5000), &request("old:x")), None);
        assert_eq!(mux.route(at(5000), &request("new:x")), Some(1));
    }

    #[test]
    fn an_address_moves_to_whoever_claims_it_last() {
        let mut mux = Mux::default();
        mux.add(1u64, "aaaa");
        mux.add(2u64, "bbbb");
        mux.route(at(5000), &request("aaaa:x"));
        mux.route(at(5000), &request("bbbb:x"));
        assert_eq!(mux.route(at(5000), &[0x80, 0]), Some(2));
        mux.remove(2);
        assert_eq!(mux.route(at(5000), &[0x80, 0]), None, "1 no longer owns it");
    }

    #[test]
    fn garbage_is_no_binding_request() {
        for junk in [
            &[][..],
            &[0, 1],
            &[0, 1, 0, 0, 0x21, 0x12, 0xA4, 0x42],
            &[0u8; 20],
            &[0, 1, 0xff, 0xff, 0x21, 0x12, 0xA4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(binding_request_ufrag(junk), None);
        }
        assert_eq!(binding_request_ufrag(&request("nocolon")), None);
        assert_eq!(binding_request_ufrag(&request("ab:cd")).as_deref(), Some("ab"));
    }
}
