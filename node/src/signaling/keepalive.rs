//! The heartbeat's driver, for both ends of a signaling connection: the
//! server's connection task and the client's session run the same
//! [`Heartbeat`] state machine through [`keep_alive`].

use medianode_core::signaling::heartbeat::{Beat, Heartbeat};
use tokio::time::Instant;

/// Why a connection's heartbeat ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// The peer stayed silent past the timeout.
    Dead,
    /// A ping could not be sent: the socket is gone.
    SendFailed,
}

/// A socket that can send a ping.
pub trait Pings {
    /// Sends a ping; false when the socket is gone.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
}

/// Sends the pings that are due, then says when to look again (the
/// connection's loop waits until then, or until the socket has something),
/// or why the connection must end.
pub async fn keep_alive(heartbeat: &mut Heartbeat, socket: &mut impl Pings) -> Result<Instant, Lapse> {
    loop {
        match heartbeat.poll(Instant::now().into_std()) {
            Beat::Dead => return Err(Lapse::Dead),
            Beat::Ping => {
                if !socket.ping().await {
                    return Err(Lapse::SendFailed);
                }
            }
            Beat::WaitUntil(at) => return Ok(Instant::from_std(at)),
        }
    }
}

impl Pings for axum::extract::ws::WebSocket {
    async fn ping(&mut self) -> bool {
        self.send(axum::extract::ws::Message::Ping(Default::default())).await.is_ok()
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Pings for tokio_tungstenite::WebSocketStream<S> {
    async fn ping(&mut self) -> bool {
        use futures_util::SinkExt;
        self.send(tokio_tungstenite::tungstenite::Message::Ping(Default::default())).await.is_ok()
    }
}
