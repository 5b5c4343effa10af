//! MQTT 5 enhanced authentication (AUTH packets) through the real MQTT frontend on a real
//! socket, with a challenge/response method plugged into the authenticator hook. No public MQTT
//! client library drives AUTH exchanges (paho-mqtt sends the method but cannot answer a
//! challenge), so the client side here is the crate's own codec, used as a client.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use junction_auth::{AuthError, AuthStep, Authenticator, Credentials, Exchange, Identity};
use junction_core::Bus;
use junction_protocols::mqtt::broker::{self, MqttServer, Options};
use junction_protocols::mqtt::{
    encode, reason, Auth, AuthProperties, Connect, ConnectProperties, Decoder, Packet, Utf8Bytes,
    Version,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const METHOD: &str = "TOY-CHALLENGE";

/// A toy method: the server challenges with a counter, the client must answer `answer:<n>`.
struct Toy;

struct ToyExchange {
    round: u32,
    user: Option<String>,
}

impl Exchange for ToyExchange {
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep {
        if self.round == 0 {
            if data != Some(b"hello") {
                return AuthStep::Refused;
            }
        } else if data != Some(format!("answer:{}", self.round).as_bytes()) {
            return AuthStep::Refused;
        }
        self.round += 1;
        if self.round <= 2 {
            return AuthStep::Continue(format!("challenge:{}", self.round).into_bytes());
        }
        AuthStep::Done {
            identity: Identity::new("$G", self.user.clone()),
            data: Some(b"welcome".to_vec()),
        }
    }
}

impl Authenticator for Toy {
    fn auth_required(&self) -> bool {
        true
    }

    fn authenticate(&self, creds: &Credentials) -> Result<Identity, AuthError> {
        match creds.pass.as_deref() {
            Some("secret") => Ok(Identity::new("$G", creds.user.clone())),
            _ => Err(AuthError::BadCredentials("wrong password".into())),
        }
    }

    fn exchange(&self, method: &str, creds: &Credentials) -> Option<Box<dyn Exchange>> {
        (method == METHOD).then(|| {
            Box::new(ToyExchange {
                round: 0,
                user: creds.user.clone(),
            }) as Box<dyn Exchange>
        })
    }
}

async fn start() -> (u16, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fe = Arc::new(MqttServer::new(
        Arc::new(Bus::new()),
        Arc::new(Toy),
        Options::default(),
    ));
    let stop = CancellationToken::new();
    tokio::spawn(broker::serve(
        listener,
        fe,
        stop.clone(),
        TaskTracker::new(),
    ));
    (port, stop)
}

struct Client {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    async fn connect(port: u16) -> Client {
        Client {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            decoder: Decoder::client(Version::V5, 1 << 20),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, p: Packet) {
        let mut out = BytesMut::new();
        encode(&p, Version::V5, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(p) = self.decoder.decode(&mut self.buf).unwrap() {
                    return Some(p);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("the server answers within 5 s")
    }
}

fn connect_with(method: Option<&str>, data: &'static [u8]) -> Packet {
    Packet::Connect(Box::new(Connect {
        clean_start: true,
        keep_alive: 30,
        client_id: Utf8Bytes::from_static("auth-test"),
        will: None,
        username: Some(Utf8Bytes::from_static("device-7")),
        password: None,
        properties: ConnectProperties {
            authentication_method: method.map(|m| Utf8Bytes::try_from(m.to_string()).unwrap()),
            authentication_data: method.map(|_| Bytes::from_static(data)),
            ..ConnectProperties::default()
        },
    }))
}

fn auth(code: u8, method: &str, data: String) -> Packet {
    Packet::Auth(Auth {
        reason: code,
        properties: AuthProperties {
            authentication_method: Some(Utf8Bytes::try_from(method.to_string()).unwrap()),
            authentication_data: Some(Bytes::from(data)),
            ..AuthProperties::default()
        },
    })
}

/// Expects AUTH with `code` and `data`.
async fn expect_auth(c: &mut Client, code: u8, data: &str) {
    match c.recv().await {
        Some(Packet::Auth(a)) => {
            assert_eq!(a.reason, code);
            assert_eq!(
                a.properties
                    .authentication_method
                    .as_ref()
                    .map(|m| m.as_str()),
                Some(METHOD)
            );
            assert_eq!(
                a.properties.authentication_data.as_deref(),
                Some(data.as_bytes())
            );
        }
        other => panic!("expected AUTH {code:#x} {data}, got {other:?}"),
    }
}

#[tokio::test]
async fn challenge_response_connect_then_re_authenticate() {
    let (port, stop) = start().await;
    let mut c = Client::connect(port).await;
    c.send(connect_with(Some(METHOD), b"hello")).await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:1").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        METHOD,
        "answer:1".into(),
    ))
    .await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:2").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        METHOD,
        "answer:2".into(),
    ))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code, reason::SUCCESS);
            assert_eq!(
                ack.properties
                    .authentication_method
                    .as_ref()
                    .map(|m| m.as_str()),
                Some(METHOD)
            );
            assert_eq!(
                ack.properties.authentication_data.as_deref(),
                Some(&b"welcome"[..])
            );
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Connected: it works like any client.
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));

    // Re-authentication while connected [MQTT-4.12.1].
    c.send(auth(reason::RE_AUTHENTICATE, METHOD, "hello".into()))
        .await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:1").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        METHOD,
        "answer:1".into(),
    ))
    .await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:2").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        METHOD,
        "answer:2".into(),
    ))
    .await;
    expect_auth(&mut c, reason::SUCCESS, "welcome").await;
    c.send(Packet::PingReq).await;
    assert_eq!(c.recv().await, Some(Packet::PingResp));

    // A failed re-authentication disconnects with "not authorized".
    c.send(auth(reason::RE_AUTHENTICATE, METHOD, "hello".into()))
        .await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:1").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        METHOD,
        "wrong".into(),
    ))
    .await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::NOT_AUTHORIZED),
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
    stop.cancel();
}

#[tokio::test]
async fn refusals() {
    let (port, stop) = start().await;

    // A wrong answer during CONNECT: CONNACK "not authorized", then the close.
    let mut c = Client::connect(port).await;
    c.send(connect_with(Some(METHOD), b"hello")).await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:1").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        METHOD,
        "answer:7".into(),
    ))
    .await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, reason::NOT_AUTHORIZED),
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);

    // A method the server does not know: CONNACK "bad authentication method".
    let mut c = Client::connect(port).await;
    c.send(connect_with(Some("SCRAM-SHA-1"), b"x")).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, reason::BAD_AUTHENTICATION_METHOD),
        other => panic!("expected CONNACK 0x8C, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);

    // Switching methods in the middle of the exchange is a protocol error: the close.
    let mut c = Client::connect(port).await;
    c.send(connect_with(Some(METHOD), b"hello")).await;
    expect_auth(&mut c, reason::CONTINUE_AUTHENTICATION, "challenge:1").await;
    c.send(auth(
        reason::CONTINUE_AUTHENTICATION,
        "OTHER",
        "answer:1".into(),
    ))
    .await;
    assert_eq!(c.recv().await, None);

    // A client that authenticated by password and then sends AUTH: DISCONNECT 0x82.
    let mut c = Client::connect(port).await;
    let mut connect = connect_with(None, b"");
    if let Packet::Connect(c) = &mut connect {
        c.password = Some(Bytes::from_static(b"secret"));
    }
    c.send(connect).await;
    match c.recv().await {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code, reason::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    c.send(auth(reason::RE_AUTHENTICATE, METHOD, "hello".into()))
        .await;
    match c.recv().await {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, reason::PROTOCOL_ERROR),
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    assert_eq!(c.recv().await, None);
    stop.cancel();
}
