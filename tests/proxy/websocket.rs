//! WebSocket through the proxy: the upgrade is forwarded, then frames flow both ways over the
//! spliced connections until a clean close.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::support::*;

/// Liveness bound for each step.
const STEP: Duration = Duration::from_secs(20);

/// A WebSocket origin: greets each client, echoes every text and binary message, answers the
/// close handshake, and records the handshake request it got.
struct WsOrigin {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WsOrigin {
    async fn start() -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let record = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    // The callback's signature is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let callback = |request: &Request, response: Response| {
                        record.lock().expect("handshakes").push(request.clone());
                        Ok(response)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await
                    else {
                        return;
                    };
                    if ws.send(Message::text("welcome")).await.is_err() {
                        return;
                    }
                    // Reading on after a Close message sends the close reply and ends the stream.
                    while let Some(Ok(message)) = ws.next().await {
                        if (message.is_text() || message.is_binary())
                            && ws.send(message).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        WsOrigin {
            addr,
            handshakes,
            task,
        }
    }
}

async fn next_message<S>(ws: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("a message within the liveness bound")
        .expect("the stream is open")
        .expect("a valid message")
}

#[tokio::test]
async fn websocket_messages_flow_both_ways_and_close_cleanly() {
    let origin = WsOrigin::start().await;
    let proxy = Proxy::start(&single_pool_config(&[origin.addr], "")).await;

    let (mut ws, response) = tokio::time::timeout(
        STEP,
        tokio_tungstenite::connect_async(format!("ws://{}/chat", proxy.addr)),
    )
    .await
    .expect("handshake within the liveness bound")
    .expect("handshake through the proxy");
    assert_eq!(response.status(), 101);
    assert!(
        response
            .headers()
            .get("upgrade")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket")),
        "{:?}",
        response.headers()
    );

    // The origin speaks first.
    assert_eq!(next_message(&mut ws).await, Message::text("welcome"));

    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let messages = [
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
        Message::text("ünïcödé ✓"),
        Message::binary(big),
        Message::text(""),
        Message::binary(Vec::new()),
    ];
    for message in &messages {
        ws.send(message.clone()).await.expect("send");
        assert_eq!(&next_message(&mut ws).await, message);
    }
    // Several in flight at once, answered in order.
    for i in 0..20 {
        ws.send(Message::text(format!("burst {i}")))
            .await
            .expect("send");
    }
    for i in 0..20 {
        assert_eq!(
            next_message(&mut ws).await,
            Message::text(format!("burst {i}"))
        );
    }

    ws.close(None).await.expect("send close");
    let reply = next_message(&mut ws).await;
    assert!(matches!(reply, Message::Close(_)), "got {reply:?}");
    let end = tokio::time::timeout(STEP, ws.next())
        .await
        .expect("the stream ends within the liveness bound");
    assert!(end.is_none(), "nothing after the close handshake: {end:?}");

    let handshakes = origin.handshakes.lock().unwrap();
    assert_eq!(handshakes.len(), 1);
    let handshake = &handshakes[0];
    assert_eq!(handshake.uri().path(), "/chat");
    let headers = handshake.headers();
    assert!(
        headers["upgrade"]
            .as_bytes()
            .eq_ignore_ascii_case(b"websocket")
    );
    assert!(
        headers["connection"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("upgrade")
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert!(headers.contains_key("sec-websocket-key"));
}
