//! The keys tokens are checked with: a shared secret (HS256/384/512), a PEM public key
//! (RSA: RS*/PS*, EC: ES256/ES384, Ed25519: EdDSA) and the keys of a JWKS file. Files are
//! read again when they change.
//!
//! Each key verifies only its own algorithm family, and a token's algorithm picks the
//! family before any key is looked at: a token signed with HS256 is never checked against
//! a public key's bytes used as an HMAC secret (the classic algorithm confusion), and no
//! key exists for `alg: none`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Header};
use jsonwebtoken::{AlgorithmFamily, jwk::AlgorithmParameters};

/// Why the configured keys cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no public key this server can use.
    #[error("{path}: not a PEM RSA, EC (P-256, P-384) or Ed25519 public key")]
    Pem {
        /// The file.
        path: PathBuf,
    },
    /// A JWKS file does not parse, or holds a key that cannot be used.
    #[error("{path}: {reason}")]
    Jwks {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One key, and what it may verify.
struct Key {
    kid: Option<String>,
    family: AlgorithmFamily,
    /// The one algorithm a JWK names with `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// Every key configured, as last read.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    fn load(secret: &str, pem: Option<&Path>, jwks: Option<&Path>) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        if !secret.is_empty() {
            keys.push(Key {
                kid: None,
                family: AlgorithmFamily::Hmac,
                alg: None,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(path) = pem {
            let bytes = read(path)?;
            let key = [
                (AlgorithmFamily::Rsa, DecodingKey::from_rsa_pem(&bytes)),
                (AlgorithmFamily::Ec, DecodingKey::from_ec_pem(&bytes)),
                (AlgorithmFamily::Ed, DecodingKey::from_ed_pem(&bytes)),
            ]
            .into_iter()
            .find_map(|(family, k)| k.ok().map(|key| (family, key)));
            let Some((family, key)) = key else {
                return Err(KeyError::Pem { path: path.into() });
            };
            keys.push(Key {
                kid: None,
                family,
                alg: None,
                key,
            });
        }
        if let Some(path) = jwks {
            let bad = |reason: String| KeyError::Jwks {
                path: path.into(),
                reason,
            };
            let set: JwkSet = serde_json::from_slice(&read(path)?)
                .map_err(|e| bad(format!("not a JWKS: {e}")))?;
            for jwk in &set.keys {
                let family = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
                    AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
                    AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
                    // A shared secret does not belong in a file of public keys.
                    AlgorithmParameters::OctetKey(_) => {
                        return Err(bad("symmetric (\"oct\") keys are not accepted".into()));
                    }
                };
                let alg = match jwk.common.key_algorithm {
                    // Key algorithms that do not sign (RSA-OAEP, ...) are refused here.
                    Some(a) => Some(
                        a.to_string()
                            .parse::<Algorithm>()
                            .map_err(|_| bad(format!("`alg` {a} does not sign")))?,
                    ),
                    None => None,
                };
                if alg.is_some_and(|a| a.family() != family) {
                    return Err(bad("a key's `alg` does not fit its type".into()));
                }
                let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    family,
                    alg,
                    key,
                });
            }
        }
        Ok(Self { keys })
    }

    /// The key to check a token with `header` against: of the algorithm's family (and
    /// the algorithm a JWK names), the one with the token's `kid`, or the only one.
    pub(crate) fn find(&self, header: &Header) -> Option<&DecodingKey> {
        let family = header.alg.family();
        let mut fits = self
            .keys
            .iter()
            .filter(|k| k.family == family && k.alg.is_none_or(|a| a == header.alg));
        if let Some(kid) = &header.kid
            && let Some(k) = fits.clone().find(|k| k.kid.as_ref() == Some(kid))
        {
            return Some(&k.key);
        }
        match (fits.next(), fits.next()) {
            (Some(only), None) => Some(&only.key),
            _ => None,
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })
}

/// The key set, read again when one of its files changes (checked every second).
pub(crate) struct Keys {
    current: RwLock<Arc<KeySet>>,
    secret: String,
    pem: Option<PathBuf>,
    jwks: Option<PathBuf>,
}

/// How often key files are looked at for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

impl Keys {
    /// Loads the keys; with files, a thread looks for changes for as long as the keys
    /// are in use.
    pub(crate) fn load(
        secret: &str,
        pem: Option<PathBuf>,
        jwks: Option<PathBuf>,
    ) -> Result<Arc<Self>, KeyError> {
        let set = KeySet::load(secret, pem.as_deref(), jwks.as_deref())?;
        let keys = Arc::new(Self {
            current: RwLock::new(Arc::new(set)),
            secret: secret.to_owned(),
            pem,
            jwks,
        });
        if keys.pem.is_some() || keys.jwks.is_some() {
            let weak = Arc::downgrade(&keys);
            let seen = keys.stamps();
            let _ = std::thread::Builder::new()
                .name("roomcast-keys".into())
                .spawn(move || watch(weak, seen));
        }
        Ok(keys)
    }

    /// The keys as last read.
    pub(crate) fn get(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        [&self.pem, &self.jwks]
            .into_iter()
            .flatten()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }

    fn reload(&self) {
        match KeySet::load(&self.secret, self.pem.as_deref(), self.jwks.as_deref()) {
            Ok(set) => {
                tracing::info!(keys = set.keys.len(), "token keys reloaded");
                let mut current = match self.current.write() {
                    Ok(c) => c,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *current = Arc::new(set);
            }
            Err(e) => tracing::warn!(error = %e, "token keys not reloaded; the old ones stay"),
        }
    }
}

fn watch(keys: Weak<Keys>, mut seen: Vec<Option<(SystemTime, u64)>>) {
    loop {
        std::thread::sleep(RELOAD_EVERY);
        let Some(keys) = keys.upgrade() else { return };
        let now = keys.stamps();
        if now != seen {
            seen = now;
            keys.reload();
        }
    }
}
