//! The WebSocket opening handshake (RFC 6455 §4.2), pure: an HTTP upgrade request in, the
//! protocol the connection will speak and the `101` response out, or the HTTP status that
//! refuses it.

/// Longest request head accepted.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Which frontend a WebSocket connection is served by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NATS, as nats.ws speaks it: no subprotocol.
    Nats,
    /// MQTT: subprotocol `mqtt` (or `mqttv3.1`), or the path `/mqtt`.
    Mqtt,
}

/// An origin: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (a trailing path is ignored).
    pub fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" | "ws" => 80,
            "https" | "wss" => 443,
            _ => return None,
        };
        let authority = rest.split('/').next()?;
        let (host, port) = split_host_port(authority, default_port)?;
        Some(Origin { scheme, host, port })
    }
}

/// Splits `host[:port]` (IPv6 in brackets); `None` when the port is not a number.
fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if s.is_empty() {
        return None;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (h, Some(p)),
            None if after.is_empty() => (h, None),
            None => return None,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// What the listener allows.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// The listener speaks TLS (wss): the scheme same-origin checks compare with.
    pub tls: bool,
    /// Refuse browsers whose Origin differs from the Host they connected to.
    pub same_origin: bool,
    /// Refuse browsers whose Origin is not in this list (when it is not empty).
    pub allowed_origins: Vec<Origin>,
    /// Accept permessage-deflate when the client offers it.
    pub compression: bool,
    /// MQTT is served (an MQTT frontend exists).
    pub mqtt: bool,
}

/// A handshake the server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The frontend that serves the connection.
    pub kind: Kind,
    /// permessage-deflate was negotiated.
    pub compress: bool,
    /// The `101 Switching Protocols` response to send.
    pub response: Vec<u8>,
    /// The request's `X-Forwarded-For` client address, when it gave a valid one.
    pub forwarded_for: Option<std::net::IpAddr>,
}

/// A handshake the server refuses: the HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub status: u16,
    pub reason: String,
}

impl Rejected {
    fn new(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// The HTTP response that refuses the handshake.
    pub fn response(&self) -> Vec<u8> {
        let text = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let body = format!("{}\n", self.reason);
        format!(
            "HTTP/1.1 {} {text}\r\nSec-WebSocket-Version: 13\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// Reads an upgrade request from the start of `buf`. `Ok(None)`: incomplete, read more.
/// `Ok(Some((accepted, n)))`: the request took `n` bytes (what follows is WebSocket data).
pub fn negotiate(buf: &[u8], policy: &Policy) -> Result<Option<(Accepted, usize)>, Rejected> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= MAX_REQUEST_BYTES {
                return Err(Rejected::new(431, "request head too large"));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejected::new(431, "too many header lines"))
        }
        Err(e) => return Err(Rejected::new(400, format!("malformed request: {e}"))),
    };
    if used > MAX_REQUEST_BYTES {
        return Err(Rejected::new(431, "request head too large"));
    }
    let header = |name: &str| -> Vec<&str> {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
            .collect()
    };
    let has_token = |name: &str, token: &str| {
        header(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method != Some("GET") {
        return Err(Rejected::new(405, "request method must be GET"));
    }
    if req.version != Some(1) {
        return Err(Rejected::new(400, "HTTP/1.1 is required"));
    }
    let host = header("Host");
    let Some(host) = host.first().copied().filter(|h| !h.is_empty()) else {
        return Err(Rejected::new(400, "'Host' missing in request"));
    };
    if !has_token("Upgrade", "websocket") {
        return Err(Rejected::new(400, "invalid value for header 'Upgrade'"));
    }
    if !has_token("Connection", "Upgrade") {
        return Err(Rejected::new(400, "invalid value for header 'Connection'"));
    }
    let key = header("Sec-WebSocket-Key");
    let Some(key) = key.first().copied() else {
        return Err(Rejected::new(400, "key missing"));
    };
    if !valid_key(key) {
        return Err(Rejected::new(400, "invalid websocket key"));
    }
    if !has_token("Sec-WebSocket-Version", "13") {
        return Err(Rejected::new(426, "invalid version: only 13 is supported"));
    }
    check_origin(&header("Origin"), host, policy)?;

    // The protocol: an MQTT subprotocol, or the /mqtt path, or else NATS.
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let offered: Vec<&str> = header("Sec-WebSocket-Protocol")
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let mut subprotocol = None;
    let kind = if !offered.is_empty() {
        match offered
            .iter()
            .find(|p| p.eq_ignore_ascii_case("mqtt") || p.eq_ignore_ascii_case("mqttv3.1"))
        {
            Some(p) => {
                subprotocol = Some(*p);
                Kind::Mqtt
            }
            None => {
                return Err(Rejected::new(
                    400,
                    format!("unsupported subprotocol: {}", offered.join(", ")),
                ))
            }
        }
    } else if path == "/mqtt" {
        Kind::Mqtt
    } else {
        Kind::Nats
    };
    if kind == Kind::Mqtt && !policy.mqtt {
        return Err(Rejected::new(404, "mqtt websocket endpoint not enabled"));
    }
    let compress = policy.compression && offers_deflate(&header("Sec-WebSocket-Extensions"));

    let mut response = String::with_capacity(256);
    response.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    response.push_str(&accept_key(key));
    response.push_str("\r\n");
    if compress {
        response.push_str("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n");
    }
    if let Some(p) = subprotocol {
        response.push_str("Sec-WebSocket-Protocol: ");
        response.push_str(p);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    let forwarded_for = header("X-Forwarded-For")
        .first()
        .and_then(|v| v.split(',').next())
        .and_then(|ip| ip.trim().parse().ok());
    Ok(Some((
        Accepted {
            kind,
            compress,
            response: response.into_bytes(),
            forwarded_for,
        },
        used,
    )))
}

/// A key is the base64 of 16 bytes: 22 characters and `==`.
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Checks the browser's Origin against the policy. A request without an Origin is not from a
/// browser page, and is let through (RFC 6455 §1.6), as nats-server does.
fn check_origin(origins: &[&str], host: &str, policy: &Policy) -> Result<(), Rejected> {
    if !policy.same_origin && policy.allowed_origins.is_empty() {
        return Ok(());
    }
    let Some(raw) = origins.first() else {
        return Ok(());
    };
    let forbidden = |why: &str| Rejected::new(403, format!("origin not allowed: {why}"));
    let origin = Origin::parse(raw).ok_or_else(|| forbidden("malformed origin"))?;
    if policy.same_origin {
        let scheme = if policy.tls { "https" } else { "http" };
        let default_port = if policy.tls { 443 } else { 80 };
        let (h, p) = split_host_port(host, default_port).ok_or_else(|| forbidden("bad host"))?;
        if origin.host != h || origin.port != p || origin.scheme != scheme {
            return Err(forbidden("not same origin"));
        }
    }
    if !policy.allowed_origins.is_empty() && !policy.allowed_origins.contains(&origin) {
        return Err(forbidden("not in the allowed list"));
    }
    Ok(())
}

/// Whether some offer of permessage-deflate can be accepted as this server answers it (no
/// context takeover either way, 15-bit windows).
fn offers_deflate(extensions: &[&str]) -> bool {
    extensions.iter().flat_map(|v| v.split(',')).any(|offer| {
        let mut params = offer.split(';').map(str::trim);
        if !params
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case("permessage-deflate"))
        {
            return false;
        }
        params.all(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => true,
                "client_max_window_bits" => true,
                // This server's window is 15 bits; an offer asking for less cannot be met.
                "server_max_window_bits" => value == "15",
                _ => false,
            }
        })
    })
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64(&h.digest().bytes())
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn policy() -> Policy {
        Policy {
            mqtt: true,
            ..Policy::default()
        }
    }

    fn status_of(req: &str, policy: &Policy) -> u16 {
        negotiate(req.as_bytes(), policy).unwrap_err().status
    }

    #[test]
    fn the_rfc_example_key() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn nats_by_default_mqtt_by_subprotocol_or_path() {
        let (a, n) = negotiate(request("").as_bytes(), &policy())
            .unwrap()
            .unwrap();
        assert_eq!(n, request("").len());
        assert_eq!(a.kind, Kind::Nats);
        let text = String::from_utf8(a.response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(!text.contains("Sec-WebSocket-Protocol"));

        let req = request("Sec-WebSocket-Protocol: mqtt\r\n");
        let (a, _) = negotiate(req.as_bytes(), &policy()).unwrap().unwrap();
        assert_eq!(a.kind, Kind::Mqtt);
        assert!(String::from_utf8(a.response)
            .unwrap()
            .contains("Sec-WebSocket-Protocol: mqtt\r\n"));

        let req = request("Sec-WebSocket-Protocol: mqttv3.1\r\n");
        let (a, _) = negotiate(req.as_bytes(), &policy()).unwrap().unwrap();
        assert!(String::from_utf8(a.response)
            .unwrap()
            .contains("Sec-WebSocket-Protocol: mqttv3.1\r\n"));

        let req = request("").replace("GET / ", "GET /mqtt ");
        let (a, _) = negotiate(req.as_bytes(), &policy()).unwrap().unwrap();
        assert_eq!(a.kind, Kind::Mqtt);

        let off = Policy::default();
        assert_eq!(
            status_of(&request("Sec-WebSocket-Protocol: mqtt\r\n"), &off),
            404
        );
    }

    #[test]
    fn incomplete_requests_wait_and_every_split_point_agrees() {
        let req = request("Sec-WebSocket-Protocol: mqtt\r\n");
        for cut in 0..req.len() {
            assert_eq!(
                negotiate(&req.as_bytes()[..cut], &policy()),
                Ok(None),
                "cut {cut}"
            );
        }
        let mut with_data = req.clone().into_bytes();
        with_data.extend_from_slice(&[0x82, 0x80]);
        let (_, n) = negotiate(&with_data, &policy()).unwrap().unwrap();
        assert_eq!(n, req.len());
    }

    #[test]
    fn bad_handshakes_get_their_status() {
        let p = policy();
        assert_eq!(status_of(&request("").replace("GET", "POST"), &p), 405);
        assert_eq!(
            status_of(&request("").replace("Upgrade: websocket\r\n", ""), &p),
            400
        );
        assert_eq!(
            status_of(
                &request("").replace("Connection: keep-alive, Upgrade", "Connection: close"),
                &p
            ),
            400
        );
        assert_eq!(
            status_of(
                &request("").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
                &p
            ),
            400
        );
        assert_eq!(status_of(&request("").replace(KEY, "short"), &p), 400);
        assert_eq!(
            status_of(&request("").replace("Version: 13", "Version: 8"), &p),
            426
        );
        assert_eq!(
            status_of(&request("").replace("Host: 127.0.0.1:8080\r\n", ""), &p),
            400
        );
        assert_eq!(
            status_of(&request("Sec-WebSocket-Protocol: chat, superchat\r\n"), &p),
            400
        );
        assert_eq!(status_of("GET / HTTP/1.0\r\nHost: x\r\n\r\n", &p), 400);
        assert_eq!(status_of("\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", &p), 400);
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_REQUEST_BYTES));
        assert_eq!(status_of(&huge, &p), 431);
        let rejected = negotiate(request("").replace("GET", "PUT").as_bytes(), &p).unwrap_err();
        let text = String::from_utf8(rejected.response()).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{text}"
        );
    }

    #[test]
    fn origins() {
        let same = Policy {
            same_origin: true,
            ..policy()
        };
        assert!(negotiate(
            request("Origin: http://127.0.0.1:8080\r\n").as_bytes(),
            &same
        )
        .is_ok());
        assert_eq!(
            status_of(&request("Origin: http://127.0.0.1:9999\r\n"), &same),
            403
        );
        assert_eq!(
            status_of(&request("Origin: https://127.0.0.1:8080\r\n"), &same),
            403
        );
        assert_eq!(
            status_of(&request("Origin: http://evil.example:8080\r\n"), &same),
            403
        );
        // No Origin: not a browser page.
        assert!(negotiate(request("").as_bytes(), &same).is_ok());

        let listed = Policy {
            allowed_origins: vec![Origin::parse("https://app.example.com").unwrap()],
            ..policy()
        };
        assert!(negotiate(
            request("Origin: https://app.example.com\r\n").as_bytes(),
            &listed
        )
        .is_ok());
        assert!(negotiate(
            request("Origin: https://app.example.com:443\r\n").as_bytes(),
            &listed
        )
        .is_ok());
        assert_eq!(
            status_of(&request("Origin: http://app.example.com\r\n"), &listed),
            403
        );
        assert_eq!(
            status_of(&request("Origin: https://other.example.com\r\n"), &listed),
            403
        );
        assert_eq!(status_of(&request("Origin: null\r\n"), &listed), 403);
        assert_eq!(
            Origin::parse("http://[::1]:81/x"),
            Some(Origin {
                scheme: "http".into(),
                host: "::1".into(),
                port: 81
            })
        );
    }

    #[test]
    fn compression_is_negotiated_only_when_allowed_and_offered() {
        let on = Policy {
            compression: true,
            ..policy()
        };
        let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        let (a, _) = negotiate(request(offer).as_bytes(), &on).unwrap().unwrap();
        assert!(a.compress);
        assert!(String::from_utf8(a.response).unwrap().contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
        ));
        let (a, _) = negotiate(request(offer).as_bytes(), &policy())
            .unwrap()
            .unwrap();
        assert!(!a.compress);
        assert!(!String::from_utf8(a.response)
            .unwrap()
            .contains("Extensions"));
        let small = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n";
        assert!(
            !negotiate(request(small).as_bytes(), &on)
                .unwrap()
                .unwrap()
                .0
                .compress
        );
        let two = "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10, permessage-deflate\r\n";
        assert!(
            negotiate(request(two).as_bytes(), &on)
                .unwrap()
                .unwrap()
                .0
                .compress
        );
    }
}
