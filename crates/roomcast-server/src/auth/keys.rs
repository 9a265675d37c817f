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

use jsonwebtoken::jwk::{Jwk, KeyOperations, PublicKeyUse};
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
            // Each key on its own: one of a type this crate does not know is skipped, not
            // the whole file.
            #[derive(serde::Deserialize)]
            struct Set {
                keys: Vec<serde_json::Value>,
            }
            let set: Set = serde_json::from_slice(&read(path)?)
                .map_err(|e| bad(format!("not a JWKS: {e}")))?;
            // Keys that cannot verify signatures (encryption keys, shared secrets, curves
            // or algorithms not supported) are skipped, as RFC 7517 section 5 asks of
            // members not understood; each is logged.
            for raw in set.keys {
                let jwk: Jwk = match serde_json::from_value(raw) {
                    Ok(jwk) => jwk,
                    Err(e) => {
                        tracing::warn!(file = %path.display(), "JWKS key skipped: {e}");
                        continue;
                    }
                };
                let kid = jwk.common.key_id.clone();
                match usable(&jwk) {
                    Ok((family, alg, key)) => keys.push(Key {
                        kid,
                        family,
                        alg,
                        key,
                    }),
                    Err(why) => {
                        tracing::warn!(file = %path.display(), ?kid, "JWKS key skipped: {why}")
                    }
                }
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
        if let Some(kid) = &header.kid {
            // The key it names; a `kid` no key has finds only a key that has no `kid`
            // (a secret, a PEM file), never another JWKS key.
            if let Some(k) = fits.clone().find(|k| k.kid.as_ref() == Some(kid)) {
                return Some(&k.key);
            }
            let mut anonymous = fits.filter(|k| k.kid.is_none());
            return match (anonymous.next(), anonymous.next()) {
                (Some(only), None) => Some(&only.key),
                _ => None,
            };
        }
        match (fits.next(), fits.next()) {
            (Some(only), None) => Some(&only.key),
            _ => None,
        }
    }
}

/// A JWK's family, its one algorithm (if it names one) and its decoding key, or why it
/// cannot verify signatures.
fn usable(jwk: &Jwk) -> Result<(AlgorithmFamily, Option<Algorithm>, DecodingKey), String> {
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
        AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
        // A shared secret does not belong in a file of public keys.
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric (\"oct\") key".into()),
    };
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("`use` is not \"sig\"".into());
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("`key_ops` does not include \"verify\"".into());
    }
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(
            a.to_string()
                .parse::<Algorithm>()
                .map_err(|_| format!("`alg` {a} does not sign"))?,
        ),
        None => None,
    };
    if alg.is_some_and(|a| a.family() != family) {
        return Err("its `alg` does not fit its type".into());
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    Ok((family, alg, key))
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
            Err(e) => tracing::error!(
                error = %e,
                "token keys NOT reloaded: the keys read before stay trusted until the file is fixed"
            ),
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
