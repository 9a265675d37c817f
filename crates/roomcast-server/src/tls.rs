//! TLS for `wss://` and `https://` on the node's one port, with rustls: the certificate
//! and key from PEM files (read again on SIGHUP, without touching connections already
//! up), or a self-signed certificate made at start (rcgen) for development.
//!
//! The handshake and the first request head go through tokio-rustls; a WebSocket then
//! keeps rustls's sans-IO `ServerConnection` beside its socket (`worker::socket`), so its
//! reads and writes stay the worker's own, as on plain TCP. ALPN offers `h2` first (with
//! `server.http2`), then `http/1.1`; a connection that chose `h2` is hyper's
//! (`conn::h2`), its WebSockets streams of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (they do not match, an unsupported key).
    #[error("the certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
    /// A self-signed certificate could not be made.
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
}

/// The protocols offered with ALPN, most preferred first: with HTTP/2, and without.
const ALPN_H2: &[&[u8]] = &[b"h2", b"http/1.1"];
const ALPN_H1: &[&[u8]] = &[b"http/1.1"];

/// Where the certificate comes from.
#[derive(Debug)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

/// The node's TLS configuration, swapped whole on reload.
#[derive(Debug)]
pub(crate) struct Tls {
    current: RwLock<Arc<ServerConfig>>,
    source: Source,
    /// The ALPN list.
    alpn: &'static [&'static [u8]],
    /// The SHA-256 fingerprint of the certificate in use, `AB:CD:...`.
    fingerprint: RwLock<String>,
}

impl Tls {
    /// From PEM files: a certificate chain (leaf first) and its private key; `http2`
    /// offers `h2` with ALPN.
    pub(crate) fn from_files(cert: &Path, key: &Path, http2: bool) -> Result<Self, TlsError> {
        let alpn = if http2 { ALPN_H2 } else { ALPN_H1 };
        let (config, fingerprint) = load(cert, key, alpn)?;
        Ok(Self {
            current: RwLock::new(config),
            source: Source::Files {
                cert: cert.into(),
                key: key.into(),
            },
            alpn,
            fingerprint: RwLock::new(fingerprint),
        })
    }

    /// A self-signed certificate for `localhost`, `127.0.0.1` and `::1`, made now.
    pub(crate) fn self_signed(http2: bool) -> Result<Self, TlsError> {
        let alpn = if http2 { ALPN_H2 } else { ALPN_H1 };
        let names = ["localhost", "127.0.0.1", "::1"]
            .map(str::to_owned)
            .to_vec();
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
        let cert = CertificateDer::from(made.cert.der().to_vec());
        let key = PrivateKeyDer::try_from(made.key_pair.serialize_der())
            .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
        let fingerprint = fingerprint(&cert);
        let config = server_config(vec![cert], key, alpn)?;
        Ok(Self {
            current: RwLock::new(config),
            source: Source::SelfSigned,
            alpn,
            fingerprint: RwLock::new(fingerprint),
        })
    }

    /// Whether the certificate comes from files (which `reload` reads again).
    pub(crate) fn reloadable(&self) -> bool {
        matches!(self.source, Source::Files { .. })
    }

    /// The configuration for a new connection.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The certificate's SHA-256 fingerprint.
    pub(crate) fn fingerprint(&self) -> String {
        match self.fingerprint.read() {
            Ok(f) => f.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Reads the files again; new connections use them, those up keep theirs. On an
    /// error the old certificate stays.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let Source::Files { cert, key } = &self.source else {
            return Ok(());
        };
        let (config, fp) = load(cert, key, self.alpn)?;
        match self.current.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
        match self.fingerprint.write() {
            Ok(mut f) => *f = fp,
            Err(p) => *p.into_inner() = fp,
        }
        Ok(())
    }
}

fn load(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<(Arc<ServerConfig>, String), TlsError> {
    let bad = |path: &Path, reason: String| TlsError::File {
        path: path.into(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(bad(cert, "no certificate in the file".into()));
    };
    let fp = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    Ok((server_config(chain, key, alpn)?, fp))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// `AB:CD:...`: the SHA-256 of a certificate's DER, as browsers and `openssl x509
/// -fingerprint -sha256` show it.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = Sha256::digest(cert.as_ref());
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
