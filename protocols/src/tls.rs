//! TLS for listeners (rustls with the ring provider): certificates and keys from PEM files, and
//! optional client certificate verification.

use junction_core::sync::ReadWrite;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// A `tls { ... }` block, as nats-server spells its keys.
#[derive(Debug, Clone, Default)]
pub struct Files {
    /// The server's certificate chain (`cert_file`).
    pub cert_file: PathBuf,
    /// The server's private key (`key_file`).
    pub key_file: PathBuf,
    /// Certificates of the authorities client certificates are checked against (`ca_file`).
    pub ca_file: Option<PathBuf>,
    /// Require and verify a client certificate (`verify`).
    pub verify: bool,
    /// Require and verify a client certificate, and take the user from it (`verify_and_map`).
    pub verify_and_map: bool,
    /// How long the handshake may take (`timeout`, default 2 s).
    pub timeout: Option<std::time::Duration>,
    /// NATS: handshake before INFO (`handshake_first`).
    pub handshake_first: bool,
    /// NATS `handshake_first: auto` or a duration: how long to wait for the client's
    /// handshake before treating it as a client that expects INFO first.
    pub handshake_first_fallback: Option<std::time::Duration>,
    /// `cipher_suites`: the suites allowed, by their IANA names (Go's TLS 1.3 names too).
    pub cipher_suites: Vec<String>,
    /// `curve_preferences`: the key exchange groups, in order (`X25519`, `CurveP256`,
    /// `CurveP384`).
    pub curve_preferences: Vec<String>,
    /// `pinned_certs`: SHA-256 (hex) of the SubjectPublicKeyInfo of the only client
    /// certificates accepted.
    pub pinned_certs: Vec<String>,
}

/// A listener's TLS: its acceptor and how clients are treated. Clones share the acceptor, and
/// [`Tls::reload`] swaps in certificates read anew from the same files for every clone, so
/// connections made after it use them (and open ones keep theirs).
#[derive(Clone)]
pub struct Tls {
    acceptor: Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>,
    files: Files,
    /// Client certificates are required and verified.
    pub verify: bool,
    /// Users come from client certificates.
    pub map: bool,
    pub timeout: std::time::Duration,
    pub handshake_first: bool,
    pub handshake_first_fallback: Option<std::time::Duration>,
    /// Client certificates accepted by their key (empty: any the CA signed).
    pinned: Arc<Vec<String>>,
}

impl Tls {
    /// Loads the files of a `tls { ... }` block.
    pub fn new(files: &Files) -> Result<Tls, TlsError> {
        Ok(Tls {
            acceptor: Arc::new(std::sync::RwLock::new(acceptor(files)?)),
            files: files.clone(),
            verify: files.verify || files.verify_and_map,
            map: files.verify_and_map,
            timeout: files.timeout.unwrap_or(std::time::Duration::from_secs(2)),
            handshake_first: files.handshake_first,
            handshake_first_fallback: files.handshake_first_fallback,
            pinned: Arc::new(
                files
                    .pinned_certs
                    .iter()
                    .map(|p| p.to_ascii_lowercase())
                    .collect(),
            ),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        self.acceptor.read_locked().clone()
    }

    /// Reads the certificate, key and CA files again; on success new connections use them. On
    /// failure the current ones stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = acceptor(&self.files)?;
        *self.acceptor.write_locked() = fresh;
        Ok(())
    }

    /// Runs the server side of the handshake; gives the stream and the names in the client's
    /// certificate, if it sent one.
    pub async fn accept<S>(
        &self,
        stream: S,
    ) -> Result<
        (
            tokio_rustls::server::TlsStream<S>,
            Option<junction_auth::CertIdentity>,
        ),
        String,
    >
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let tls = tokio::time::timeout(self.timeout, self.acceptor().accept(stream))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if !self.pinned.is_empty() {
            let key = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| spki_sha256(c.as_ref()));
            match key {
                Some(k) if self.pinned.contains(&k) => {}
                Some(k) => return Err(format!("certificate not pinned (key id {k})")),
                None => return Err("certificate not pinned (no client certificate)".into()),
            }
        }
        let cert = client_cert(&tls);
        Ok((tls, cert))
    }
}

/// Why a TLS configuration could not be loaded; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading certificates from {path}: {message}")]
    Certs { path: PathBuf, message: String },
    #[error("reading the private key from {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Builds the acceptor a listener wraps its connections in.
pub fn acceptor(files: &Files) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::Key {
        path: files.key_file.clone(),
        message: e.to_string(),
    })?;
    let verifying = files.verify || files.verify_and_map;
    if !files.pinned_certs.is_empty() && !verifying {
        return Err(TlsError::Config(
            "'pinned_certs' needs 'verify: true': clients must present a certificate".into(),
        ));
    }
    for p in &files.pinned_certs {
        if p.len() != 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TlsError::Config(format!(
                "pinned certificate {p:?} is not a hex SHA-256 of a public key"
            )));
        }
    }
    let provider = Arc::new(provider(files)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (&files.ca_file, files.verify || files.verify_and_map) {
        (Some(ca), true) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in read_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        (None, true) => {
            return Err(TlsError::Config(
                "'verify' needs a 'ca_file' to check client certificates against".into(),
            ))
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A TLS client (a leaf node remote): servers are checked against the authorities in
/// `ca_file`; `client` is the certificate chain and key to present, when the server asks.
pub fn connector(
    ca_file: &PathBuf,
    client: Option<(&PathBuf, &PathBuf)>,
) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(ca_file)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", ca_file.display())))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let certs = read_certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
                path: key.clone(),
                message: e.to_string(),
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Config(e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The ring provider, narrowed to the configured cipher suites and key exchange groups.
fn provider(files: &Files) -> Result<rustls::crypto::CryptoProvider, TlsError> {
    let mut p = rustls::crypto::ring::default_provider();
    if !files.cipher_suites.is_empty() {
        let all = p.cipher_suites.clone();
        let name_of = |s: &rustls::SupportedCipherSuite| {
            // rustls says TLS13_AES_128_GCM_SHA256 where Go says TLS_AES_128_GCM_SHA256.
            format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1)
        };
        let mut chosen = Vec::new();
        for want in &files.cipher_suites {
            let want_norm = want.to_ascii_uppercase().replacen("TLS13_", "TLS_", 1);
            match all.iter().find(|s| name_of(s) == want_norm) {
                Some(s) => chosen.push(*s),
                None => {
                    let names: Vec<String> = all.iter().map(name_of).collect();
                    return Err(TlsError::Config(format!(
                        "cipher suite {want:?} is not supported here (supported: {})",
                        names.join(", ")
                    )));
                }
            }
        }
        p.cipher_suites = chosen;
    }
    if !files.curve_preferences.is_empty() {
        let all = p.kx_groups.clone();
        let mut chosen = Vec::new();
        for want in &files.curve_preferences {
            let rustls_name = match want.to_ascii_lowercase().as_str() {
                "x25519" => "X25519",
                "curvep256" | "p256" | "p-256" | "secp256r1" => "secp256r1",
                "curvep384" | "p384" | "p-384" | "secp384r1" => "secp384r1",
                _ => "",
            };
            match all.iter().find(|g| format!("{:?}", g.name()) == rustls_name) {
                Some(g) => chosen.push(*g),
                None => {
                    return Err(TlsError::Config(format!(
                        "curve {want:?} is not supported here (supported: X25519, CurveP256, CurveP384)"
                    )))
                }
            }
        }
        p.kx_groups = chosen;
    }
    Ok(p)
}

/// SHA-256 (hex) of a certificate's SubjectPublicKeyInfo, as `pinned_certs` names keys.
pub fn spki_sha256(cert: &[u8]) -> Option<String> {
    use sha2::Digest;
    let (_, cert_body, _) = der(cert)?;
    let (_, tbs, _) = der(cert_body)?;
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, validity, subject, then the key.
    let mut index = 0;
    loop {
        let (tag, _, after) = der(rest)?;
        let raw = &rest[..rest.len() - after.len()];
        if tag == 0xa0 {
            rest = after;
            continue;
        }
        if index == 5 {
            let digest = sha2::Sha256::digest(raw);
            return Some(digest.iter().map(|b| format!("{b:02x}")).collect());
        }
        index += 1;
        rest = after;
    }
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::Certs {
        path: path.clone(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate found".into()));
    }
    Ok(certs)
}

/// The names in the certificate the client of `tls` presented, if any.
pub(crate) fn client_cert<S>(
    tls: &tokio_rustls::server::TlsStream<S>,
) -> Option<junction_auth::CertIdentity> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| cert_identity(c.as_ref()))
}

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements inside a constructed DER element's contents.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, body, rest) = der(input)?;
        input = rest;
        Some((tag, body))
    })
}

/// Dotted text of a DER object identifier.
fn oid_text(body: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in body.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if parts.is_empty() && i < body.len() {
                let first = if v >= 80 { 2 } else { v / 40 };
                parts.push(first);
                parts.push(v - first * 40);
            } else {
                parts.push(v);
            }
            v = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The short name of a distinguished-name attribute, as RFC 4514 writes it.
fn attribute_name(oid: &str) -> String {
    match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.5" => "SERIALNUMBER",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        other => return other.to_string(),
    }
    .to_string()
}

/// The names `verify_and_map` looks users up by, read from a DER certificate: the subject's
/// attributes and the email, DNS and URI alternative names. `None` for something that is not a
/// certificate.
pub fn cert_identity(cert: &[u8]) -> Option<junction_auth::CertIdentity> {
    let (0x30, body, _) = der(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = der(body)? else {
        return None;
    };
    let mut fields = elements(tbs).peekable();
    if fields.peek().is_some_and(|(t, _)| *t == 0xa0) {
        fields.next(); // version
    }
    let _serial = fields.next()?;
    let _signature = fields.next()?;
    let _issuer = fields.next()?;
    let _validity = fields.next()?;
    let (0x30, subject) = fields.next()? else {
        return None;
    };
    let mut id = junction_auth::CertIdentity::default();
    for (_, set) in elements(subject) {
        for (_, pair) in elements(set) {
            let mut kv = elements(pair);
            let (0x06, oid) = kv.next()? else {
                return None;
            };
            let (_, value) = kv.next()?;
            id.subject.push((
                attribute_name(&oid_text(oid)),
                String::from_utf8_lossy(value).into_owned(),
            ));
        }
    }
    for (tag, body) in fields {
        if tag != 0xa3 {
            continue;
        }
        let (0x30, exts, _) = der(body)? else {
            return None;
        };
        for (_, ext) in elements(exts) {
            let mut parts = elements(ext);
            let (0x06, oid) = parts.next()? else {
                return None;
            };
            if oid != [0x55, 0x1d, 0x11] {
                continue; // not subjectAltName
            }
            let Some((_, value)) = parts.find(|(t, _)| *t == 0x04) else {
                continue;
            };
            let (0x30, names, _) = der(value)? else {
                return None;
            };
            for (tag, name) in elements(names) {
                let text = String::from_utf8_lossy(name).into_owned();
                match tag {
                    0x81 => id.emails.push(text),
                    0x82 => id.dns.push(text),
                    0x86 => id.uris.push(text),
                    _ => {}
                }
            }
        }
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/tls")
            .join(name);
        CertificateDer::from_pem_file(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .as_ref()
            .to_vec()
    }

    #[test]
    fn names_come_out_of_real_certificates() {
        let c = cert_identity(&fixture("client.pem")).unwrap();
        assert_eq!(c.emails, vec!["device1@example.com"]);
        assert!(c.subject.contains(&("CN".into(), "device-1".into())));
        assert!(c.subject.contains(&("O".into(), "Junction Tests".into())));
        let s = cert_identity(&fixture("server.pem")).unwrap();
        assert!(s.dns.contains(&"localhost".to_string()));
    }

    #[test]
    fn garbage_and_truncations_are_not_certificates() {
        let c = fixture("client2.pem");
        for cut in 0..c.len() {
            // Every prefix is refused or parsed without panicking, never more than the whole.
            let _ = cert_identity(&c[..cut]);
        }
        assert!(cert_identity(&[]).is_none());
        assert!(cert_identity(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(cert_identity(b"not a certificate").is_none());
    }
}
