//! The signaling server over real WebSocket connections: every message
//! type, every kind of bad input, the limits, the heartbeat, tokens, and a
//! signaling plugin that traps mid-conversation.

use crate::common::stock_stage;
use futures_util::{SinkExt, StreamExt};
use medianode::signaling::server::{Server, ServerOptions};
use medianode::signaling::token;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn server(plugin: &str, options: ServerOptions) -> Server {
    let stage = stock_stage(plugin, "{}");
    Server::start("127.0.0.1:0".parse().expect("addr"), options, stage, Default::default(), None, None).await.expect("server starts")
}

async fn connect(server: &Server) -> Socket {
    connect_async(format!("ws://{}/ws", server.addr)).await.expect("connects").0
}

pub(crate) async fn say(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("sends");
}

/// The next text message, as JSON (pings are answered by the client itself).
pub(crate) async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next()).await.expect("a message within 5 s");
        match message.expect("socket open").expect("no socket error") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// The next message must be an error with this code.
async fn expect_error(socket: &mut Socket, code: &str) -> Value {
    let reply = next(socket).await;
    assert_eq!((reply["type"].as_str(), reply["code"].as_str()), (Some("error"), Some(code)), "{reply}");
    reply
}

async fn joined(server: &Server, room: &str, user: &str) -> Socket {
    let mut socket = connect(server).await;
    say(&mut socket, json!({"type": "join", "room": room, "user": user})).await;
    assert_eq!(next(&mut socket).await["type"], "joined");
    socket
}

#[tokio::test]
async fn every_message_type_over_a_real_websocket() {
    let server = server("signaling", ServerOptions::default()).await;
    let mut alice = joined(&server, "r", "alice").await;
    let mut bob = joined(&server, "r", "bob").await;
    assert_eq!(next(&mut alice).await, json!({"type": "presence", "room": "r", "user": "bob", "state": "joined", "e2ee": false}));

    say(&mut alice, json!({"type": "publish", "kinds": ["audio", "video"]})).await;
    assert_eq!(next(&mut bob).await["type"], "published");
    say(&mut bob, json!({"type": "subscribe", "publisher": "alice"})).await;
    assert_eq!(next(&mut bob).await["kinds"], json!(["audio", "video"]));
    // The seed's handler panicked on every Typing and Ack event.
    for message in [json!({"type": "typing"}), json!({"type": "ack", "id": "m1"}), json!({"type": "read", "id": "m1"})] {
        say(&mut alice, message.clone()).await;
        let heard = next(&mut bob).await;
        assert_eq!((heard["type"].clone(), heard["user"].as_str()), (message["type"].clone(), Some("alice")));
    }
    say(&mut alice, json!({"type": "unpublish"})).await;
    assert_eq!(next(&mut bob).await["type"], "unpublished");
    // Media messages need a node that carries media.
    say(&mut alice, json!({"type": "offer", "sdp": "v=0"})).await;
    expect_error(&mut alice, "no-media").await;
    say(&mut alice, json!({"type": "leave"})).await;
    assert_eq!(next(&mut alice).await["type"], "left");
    assert_eq!(next(&mut bob).await["state"], "left");
}

#[tokio::test]
async fn bad_input_gets_error_replies_and_the_connection_stays_up() {
    let options = ServerOptions { max_message: 1024, ..ServerOptions::default() };
    let server = server("signaling", options).await;
    let mut alice = joined(&server, "r", "alice").await;
    let mut bob = joined(&server, "r", "bob").await;
    next(&mut alice).await; // bob's presence

    alice.send(Message::text("{\"type\": \"join\", ")).await.expect("sends");
    expect_error(&mut alice, "bad-json").await;
    say(&mut alice, json!({"type": "dance"})).await;
    expect_error(&mut alice, "unknown-type").await;
    say(&mut alice, json!({"type": "typing", "room": "other"})).await;
    expect_error(&mut alice, "wrong-room").await;
    say(&mut alice, json!({"type": "ack", "id": "x", "user": "bob"})).await;
    expect_error(&mut alice, "wrong-user").await;
    say(&mut alice, json!({"type": "publish", "kinds": "everything"})).await;
    expect_error(&mut alice, "bad-message").await;
    alice.send(Message::binary(vec![1, 2, 3])).await.expect("sends");
    expect_error(&mut alice, "bad-message").await;
    let big = json!({"type": "typing", "pad": "x".repeat(2000)});
    say(&mut alice, big).await;
    let reply = expect_error(&mut alice, "too-big").await;
    assert!(reply["message"].as_str().is_some_and(|m| m.contains("1024")), "{reply}");

    // Still in the room, still heard.
    say(&mut alice, json!({"type": "typing"})).await;
    assert_eq!(next(&mut bob).await["user"], "alice");
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_the_connection_stays_up() {
    const RATE: f64 = 20.0;
    let options = ServerOptions { rate: RATE, burst: 10, ..ServerOptions::default() };
    let server = server("signaling", options).await;
    let mut alice = joined(&server, "r", "alice").await;
    let mut bob = joined(&server, "r", "bob").await;
    next(&mut alice).await;
    let mut carol = joined(&server, "r", "carol").await;
    next(&mut alice).await;
    next(&mut bob).await;

    let flood = std::time::Instant::now();
    for i in 0..200 {
        say(&mut alice, json!({"type": "ack", "id": i.to_string()})).await;
    }
    // At most the burst (less the join) gets through, and what the bucket
    // refilled while the flood went on; then one rate-limited reply.
    let reply = expect_error(&mut alice, "rate-limited").await;
    let refilled = (flood.elapsed().as_secs_f64() * RATE).ceil() as usize;
    assert!(reply["message"].as_str().is_some_and(|m| m.contains("20")), "{reply}");
    // Everything alice got through was handed on before her reply, so it
    // reaches bob before carol's mark, which the node handles after it.
    say(&mut carol, json!({"type": "ack", "id": "mark"})).await;
    let mut heard = 0;
    loop {
        let event = next(&mut bob).await;
        if event["user"] == "carol" {
            break;
        }
        assert_eq!(event["user"], "alice", "{event}");
        heard += 1;
    }
    assert!((9..=9 + refilled + 1).contains(&heard), "bob heard {heard} of 200 acks ({refilled} tokens refilled during the flood)");
    // The budget refills with time (one message per 50 ms): after that
    // much time the connection works again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    say(&mut alice, json!({"type": "ack", "id": "again"})).await;
    loop {
        let event = next(&mut bob).await;
        if event["id"] == "again" {
            break;
        }
    }
}

/// A peer that stops answering is closed by the heartbeat: ping after 10 s
/// of silence, closed after 30 s, on tokio's paused clock. (The paused
/// clock jumps ahead whenever the runtime idles, so the connection may have
/// started up to one ping interval before `connected` is taken: hence the
/// 19 s bound.)
#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_closed_by_the_heartbeat() {
    let server = server("signaling", ServerOptions::default()).await;
    let mut silent = connect(&server).await;
    let connected = tokio::time::Instant::now();
    tokio::time::sleep_until(connected + Duration::from_secs(19)).await;
    assert_eq!(server.connections.len(), 1, "still open 19 s in");
    tokio::time::sleep_until(connected + Duration::from_secs(31)).await;
    assert_eq!(server.connections.len(), 0, "closed 30 s after it last answered");
    // What the silent client finds when it reads again: the pings it never
    // answered, then the end (a close frame saying why, unless answering a
    // ping hit the closed socket first).
    let mut seen = Vec::new();
    while let Some(Ok(message)) = silent.next().await {
        match message {
            Message::Ping(_) => seen.push("ping".to_string()),
            Message::Close(Some(frame)) => seen.push(frame.reason.to_string()),
            other => seen.push(format!("{other:?}")),
        }
    }
    assert!(seen.first().is_some_and(|m| m == "ping"), "{seen:?}");
    assert!(seen.iter().all(|m| m == "ping" || m == "heartbeat timeout"), "{seen:?}");
}

/// A peer that answers pings stays, however quiet it is otherwise (real
/// time, short intervals).
#[tokio::test]
async fn a_quiet_peer_that_answers_pings_stays() {
    let options = ServerOptions {
        heartbeat_interval: Duration::from_millis(100),
        heartbeat_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = server("signaling", options).await;
    let mut quiet = joined(&server, "r", "quiet").await;
    let mut pings = 0;
    // Reading answers pings (the client library does it).
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_millis(1500), quiet.next()).await {
        assert!(matches!(message, Message::Ping(_)), "{message:?}");
        pings += 1;
        if pings == 10 {
            break;
        }
    }
    assert_eq!(pings, 10, "pinged every 100 ms and still open");
    assert_eq!(server.connections.len(), 1);
}

/// A signaling plugin that traps mid-conversation closes no socket and
/// loses no room; the message that made it trap gets an error reply.
#[tokio::test]
async fn a_signaling_plugin_trap_keeps_every_socket_and_room() {
    let server = server("faulty-signaling", ServerOptions::default()).await;
    let mut alice = joined(&server, "r", "alice").await;
    let mut bob = joined(&server, "r", "bob").await;
    next(&mut alice).await;

    say(&mut alice, json!({"type": "typing", "fault": "panic"})).await;
    expect_error(&mut alice, "internal").await;
    say(&mut bob, json!({"type": "typing", "fault": "loop"})).await;
    expect_error(&mut bob, "internal").await;

    // Both sockets are open and the room is whole.
    say(&mut bob, json!({"type": "typing"})).await;
    assert_eq!(next(&mut alice).await["user"], "bob");
    say(&mut alice, json!({"type": "ack", "id": "7"})).await;
    assert_eq!(next(&mut bob).await["id"], "7");
    let mut carol = connect(&server).await;
    say(&mut carol, json!({"type": "join", "room": "r", "user": "carol"})).await;
    let members = next(&mut carol).await["members"].as_array().map(Vec::len);
    assert_eq!(members, Some(3), "alice and bob are still in the room");
    assert_eq!(server.connections.len(), 3);
}

/// A signaling plugin that sleeps traps on its deadline (the message gets
/// an `internal` error at once, not ten seconds later), and one that
/// answers with more than the node sends has the answer dropped and
/// counted; every socket and the room stay.
#[tokio::test]
async fn a_signaling_plugin_that_sleeps_or_answers_too_much_keeps_every_socket() {
    let server = server("faulty-signaling", ServerOptions::default()).await;
    let mut alice = joined(&server, "r", "alice").await;
    let mut bob = joined(&server, "r", "bob").await;
    next(&mut alice).await;

    let asked = std::time::Instant::now();
    say(&mut alice, json!({"type": "typing", "fault": "sleep"})).await;
    expect_error(&mut alice, "internal").await;
    assert!(asked.elapsed() < Duration::from_secs(2), "the sleep was not cut: {:?}", asked.elapsed());

    say(&mut bob, json!({"type": "typing", "fault": "huge"})).await;
    say(&mut bob, json!({"type": "ack", "id": "after"})).await;
    assert_eq!(next(&mut alice).await["id"], "after", "the room still works");
    assert_eq!(server.connections.counters.oversized.load(std::sync::atomic::Ordering::Relaxed), 1);
    say(&mut alice, json!({"type": "typing"})).await;
    assert_eq!(next(&mut bob).await["user"], "alice", "bob got nothing over the limit, and is still here");
    assert_eq!(server.connections.len(), 2);
}

#[tokio::test]
async fn tokens_are_checked_at_the_door_and_scope_the_join() {
    let secret = b"a test secret".to_vec();
    let options = ServerOptions { token_secret: Some(secret.clone()), ..ServerOptions::default() };
    let server = server("signaling", options).await;
    let url = format!("ws://{}/ws", server.addr);

    let refused = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("connected without a valid token"),
    };
    assert_eq!(refused(connect_async(url.clone()).await.map(|_| ())), 401);
    let far = u64::MAX / 2;
    let forged = token::sign(b"another secret", &token::Claims { room: "r".into(), user: "alice".into(), exp: far });
    assert_eq!(refused(connect_async(format!("{url}?token={forged}")).await.map(|_| ())), 401);
    let expired = token::sign(&secret, &token::Claims { room: "r".into(), user: "alice".into(), exp: 1 });
    assert_eq!(refused(connect_async(format!("{url}?token={expired}")).await.map(|_| ())), 401);

    let good = token::sign(&secret, &token::Claims { room: "r".into(), user: "alice".into(), exp: far });
    let (mut alice, _) = connect_async(format!("{url}?token={good}")).await.expect("a valid token connects");
    say(&mut alice, json!({"type": "join", "room": "r", "user": "mallory"})).await;
    expect_error(&mut alice, "token-scope").await;
    say(&mut alice, json!({"type": "join", "room": "r", "user": "alice"})).await;
    assert_eq!(next(&mut alice).await["type"], "joined");
}

/// Every file of the page: its content type, the isolation headers, and
/// an `ETag` that makes a second fetch a `304` without a body (the 3 MB
/// E2EE wasm is downloaded once, yet revalidated every time).
#[tokio::test]
async fn the_page_is_served_cross_origin_isolated_and_revalidated() {
    let server = server("signaling", ServerOptions::default()).await;
    let addr = server.addr;
    let get = |path: &str, extra: String| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}\r\n");
        async move {
            let mut stream = TcpStream::connect(addr).await.expect("connects");
            tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.expect("writes");
            let mut bytes = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut bytes).await.expect("reads");
            bytes
        }
    };
    for &(path, content_type, body) in medianode::signaling::page::FILES {
        let bytes = get(path, String::new()).await;
        let response = String::from_utf8_lossy(&bytes);
        let head = response.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{path}: {}", &response[..response.len().min(200)]);
        assert!(head.contains(&format!("content-type: {content_type}")), "{path} is served as {content_type}");
        assert!(bytes.ends_with(body), "{path}: the body is the file");
        for header in [
            "cross-origin-opener-policy: same-origin",
            "cross-origin-embedder-policy: require-corp",
            "cross-origin-resource-policy: same-site",
            "cache-control: no-cache",
        ] {
            assert!(head.contains(header), "{path} lacks {header}");
        }
        let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap_or_else(|| panic!("{path} has no etag")).trim().to_string();
        let again = get(path, format!("If-None-Match: {etag}\r\n")).await;
        let again = String::from_utf8_lossy(&again).to_ascii_lowercase();
        assert!(again.starts_with("http/1.1 304"), "{path} with its etag: {}", &again[..again.len().min(200)]);
        assert!(again.ends_with("\r\n\r\n"), "{path}: a 304 has no body");
        let stale = get(path, "If-None-Match: \"0123\"\r\n".into()).await;
        assert!(String::from_utf8_lossy(&stale).starts_with("HTTP/1.1 200"), "{path} with another etag is sent again");
    }
}

/// The signaling stage as the MLS delivery service, with real openmls
/// members on real WebSockets: bob's key package reaches alice, her commit
/// is accepted and bob joins from the welcome; a second commit for the same
/// epoch is refused with the current epoch; both end on the same epoch
/// with the same safety number.
#[tokio::test]
async fn the_signaling_stage_delivers_mls_handshakes_in_order() {
    use base64::Engine as _;
    use medianode_e2ee::membership::Member;
    let b64 = base64::engine::general_purpose::STANDARD;
    let server = server("signaling", ServerOptions::default()).await;
    let mut alice_ws = joined(&server, "r", "alice").await;
    let mut bob_ws = joined(&server, "r", "bob").await;
    next(&mut alice_ws).await; // bob's presence
    let mut alice = Member::new("alice").expect("member");
    alice.create_group("r").expect("group");
    let mut bob = Member::new("bob").expect("member");

    say(&mut bob_ws, json!({"type": "mls-key-package", "package": b64.encode(bob.key_package().expect("kp"))})).await;
    let heard = next(&mut alice_ws).await;
    assert_eq!((heard["type"].as_str(), heard["user"].as_str()), (Some("mls-key-package"), Some("bob")));
    let package = b64.decode(heard["package"].as_str().expect("package")).expect("base64");
    let commit = alice.add(&[package]).expect("add").expect("a commit");
    let message = json!({
        "type": "mls-commit", "epoch": commit.epoch, "commit": b64.encode(&commit.commit),
        "welcome": b64.encode(commit.welcome.as_deref().expect("welcome")), "joiners": ["bob"],
    });
    say(&mut alice_ws, message.clone()).await;
    assert_eq!(next(&mut alice_ws).await["type"], "mls-accepted");
    alice.confirm().expect("merge");
    let welcome = next(&mut bob_ws).await;
    assert_eq!(welcome["type"], "mls-welcome");
    bob.join(&b64.decode(welcome["welcome"].as_str().expect("welcome")).expect("base64")).expect("joins");

    // The same epoch again: refused, with the epoch to rebase on.
    say(&mut bob_ws, message).await;
    let refused = expect_error(&mut bob_ws, "stale-epoch").await;
    assert_eq!(refused["epoch"], 1);
    assert_eq!(alice.epoch(), bob.epoch());
    assert_eq!(alice.safety_number(), bob.safety_number());
}

/// An edge node's signaling client: the line is cut, it reconnects at once
/// and rejoins; the node goes down, it backs off 1 s, 2 s, 4 s, 8 s...
/// (paused clock, no jitter); the node comes back on the same address and
/// the client is back in its room. With few attempts allowed, it gives up.
#[tokio::test(start_paused = true)]
async fn the_client_reconnects_with_backoff_and_rejoins() {
    use medianode::signaling::client::{Client, ClientEvent, ClientOptions};
    let first = server("signaling", ServerOptions::default()).await;
    let addr = first.addr;
    let mut options = ClientOptions::new(&format!("ws://{addr}/ws"), "r", "edge");
    options.reconnect.jitter = 0.0;
    // The paused clock leaps ahead whenever the runtime waits on the
    // stage's thread or a socket: keep "healthy" (which resets the
    // backoff) and the attempt window out of its reach.
    options.reconnect.healthy_after = Duration::from_secs(3600);
    options.reconnect.window = Duration::from_secs(3600);
    let mut client = Client::start(options.clone());
    let next_event = async |client: &mut Client| client.next().await.expect("client running");
    let joined = async |client: &mut Client| loop {
        if let ClientEvent::Message(m) = next_event(client).await
            && m["type"] == "joined"
        {
            return m;
        }
    };
    assert_eq!(joined(&mut client).await["user"], "edge");

    // The line is cut: straight back, and in the room again.
    first.connections.close_all("cut");
    match client.next().await {
        Some(ClientEvent::Disconnected { reason, retry_in }) => {
            assert!(reason.contains("cut"), "{reason}");
            assert_eq!(retry_in, Duration::ZERO);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(client.next().await, Some(ClientEvent::Connected { attempt: 2, url: format!("ws://{addr}/ws") }));
    joined(&mut client).await;

    // The node goes away: backoff doubles.
    first.connections.close_all("shutting down");
    drop(first);
    let mut delays = Vec::new();
    while delays.len() < 4 {
        if let Some(ClientEvent::Disconnected { retry_in, .. }) = client.next().await {
            delays.push(retry_in.as_secs());
        }
    }
    assert_eq!(delays, [1, 2, 4, 8]);

    // Back on the same address: connected and rejoined.
    let _second =
        Server::start(addr, ServerOptions::default(), crate::common::stock_stage("signaling", "{}"), Default::default(), None, None)
            .await
            .expect("the node is back");
    loop {
        match client.next().await {
            Some(ClientEvent::Connected { .. }) => break,
            Some(ClientEvent::Disconnected { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    joined(&mut client).await;
    drop(client);

    // Few attempts allowed and nobody there: it gives up.
    let mut options = ClientOptions::new("ws://127.0.0.1:9/ws", "r", "edge");
    options.reconnect.max_restarts = 2;
    let mut hopeless = Client::start(options);
    loop {
        match hopeless.next().await {
            Some(ClientEvent::GaveUp { failures }) => break assert_eq!(failures, 3),
            Some(ClientEvent::Disconnected { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
