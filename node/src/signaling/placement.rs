//! Where a room's signaling lives when the node is one of several: the
//! seam between the signaling server and the cluster that places rooms
//! ([`crate::cluster`] implements it; the server knows only this).

use super::connections::Connections;
use super::hub::SeatSink;
use std::sync::Arc;

/// Where a room's signaling goes, for one connection.
pub enum Destination {
    /// This node's stage.
    Here,
    /// The room's home, through a link opened for the connection.
    There(Box<dyn Link>),
    /// The room's home is node `.0`, and no link was wanted.
    Elsewhere(String),
}

/// A connection's signaling carried to its room's home.
pub trait Link: Send + Sync {
    /// Passes a client message on; false when too much waits already.
    fn send(&self, text: String) -> bool;
    fn room(&self) -> &str;
    /// The home's node.
    fn home(&self) -> &str;
}

/// The cluster, as the signaling server uses it.
#[async_trait::async_trait]
pub trait Placement: Send + Sync {
    /// Where `room`'s signaling goes for client `connection` (which gave
    /// `token`); a link is opened only when `link` (the connection has no
    /// signaling anywhere yet). Seats the home gives go to `seats`.
    async fn route(
        &self,
        room: &str,
        token: Option<&str>,
        connection: u64,
        link: bool,
        connections: Connections,
        seats: Option<Arc<dyn SeatSink>>,
    ) -> Result<Destination, String>;

    /// This node's stage seated `connection` in `room` (this node is the
    /// room's home), and took the seat back.
    fn hosting(&self, connection: u64, room: &str);
    fn not_hosting(&self, connection: u64);

    /// `connection`'s media is on this node (its load), and no longer.
    fn media_seated(&self, connection: u64);
    fn media_unseated(&self, connection: u64);

    /// The signaling URLs of the nodes a client may use now, this one first
    /// (a page fails over to the next when its node goes).
    fn node_urls(&self) -> Vec<String>;

    /// A drain begins (no new rooms here; the rooms here let go), and ends.
    async fn drain(&self);
    async fn leave(&self);
}
