//! Who a client is and what it may do: JSON Web Tokens checked with the `jsonwebtoken`
//! crate against the configured keys ([`keys`]), and the `rooms` claim ([`grants`]).
//!
//! A token must carry `sub` (the client id) and `exp`; `nbf` is checked when present,
//! `aud` and `iss` when `auth.audience` / `auth.issuer` are set, all with
//! `auth.leeway_ms` of leeway for clocks that disagree.

pub(crate) mod grants;
pub(crate) mod keys;
pub(crate) mod origin;

use std::path::PathBuf;
use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

pub(crate) use grants::{Action, Grants};
pub use keys::KeyError;

use crate::config::AuthSettings;
use grants::RoomGrants;
use keys::Keys;

/// Why a token was refused (`unauthorized`, 4001 when it closes a connection).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Auth is required and no token came.
    #[error("a token is required")]
    Missing,
    /// Not a JWT, or its parts do not decode.
    #[error("the token is malformed")]
    Malformed,
    /// No configured key verifies this algorithm (or this `kid`).
    #[error("no key for a token signed with {0}")]
    NoKey(String),
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYet,
    /// `aud` or `iss` is not the configured one.
    #[error("the token is not for this server ({0})")]
    Audience(&'static str),
    /// A claim is missing or of the wrong shape.
    #[error("the token's claims are invalid: {0}")]
    Claims(String),
    /// The client id given is not the token's `sub`.
    #[error("`client` is not the token's subject")]
    ClientMismatch,
}

/// What a verified token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    /// `sub`.
    pub client: String,
    /// The `rooms` claim.
    pub grants: Grants,
    /// `exp`, in ms since the Unix epoch.
    pub expires_ms: u64,
}

/// The longest token looked at: anything longer is refused before it is decoded.
pub(crate) const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The node's token checker.
pub(crate) struct Auth {
    keys: Option<Arc<Keys>>,
    required: bool,
    settings: AuthSettings,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("keys", &self.keys.is_some())
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Loads the configured keys. With none, tokens are not looked at and every client
    /// may do everything (unless `auth.required` is `true`, which the configuration
    /// refuses without a key).
    pub(crate) fn new(settings: &AuthSettings) -> Result<Self, KeyError> {
        let file = |p: &str| (!p.is_empty()).then(|| PathBuf::from(p));
        let pem = file(&settings.jwt_public_key_file);
        let jwks = file(&settings.jwks_file);
        let configured = !settings.jwt_secret.is_empty() || pem.is_some() || jwks.is_some();
        let keys = if configured {
            Some(Keys::load(&settings.jwt_secret, pem, jwks)?)
        } else {
            None
        };
        let required = match settings.required.as_str() {
            "true" => true,
            "false" => false,
            _ => configured,
        };
        Ok(Self {
            keys,
            required,
            settings: settings.clone(),
        })
    }

    /// Whether keys are configured (tokens are checked).
    pub(crate) fn is_on(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether a client without a token is refused.
    pub(crate) fn is_required(&self) -> bool {
        self.required
    }

    /// How long before `exp` a connection is told its token is expiring.
    pub(crate) fn warning_ms(&self) -> u64 {
        self.settings.expiry_warning_ms
    }

    /// The leeway past `exp`, in ms.
    pub(crate) fn leeway_ms(&self) -> u64 {
        self.settings.leeway_ms
    }

    /// Admits a client that gave `token` (and maybe a client id): `None` is an anonymous
    /// client who may do everything (no token while auth is not required, or any while
    /// no key is configured).
    pub(crate) fn admit(
        &self,
        token: Option<&str>,
        client: Option<&str>,
    ) -> Result<Option<Identity>, AuthError> {
        if self.keys.is_none() {
            return Ok(None);
        }
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return if self.required {
                Err(AuthError::Missing)
            } else {
                Ok(None)
            };
        };
        let identity = self.verify(token)?;
        if client.is_some_and(|c| c != identity.client) {
            return Err(AuthError::ClientMismatch);
        }
        Ok(Some(identity))
    }

    /// Checks a token's signature and claims.
    pub(crate) fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(keys) = &self.keys else {
            return Err(AuthError::NoKey("any algorithm".into()));
        };
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let set = keys.get();
        let key = set
            .find(&header)
            .ok_or_else(|| AuthError::NoKey(format!("{:?}", header.alg)))?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.settings.leeway_ms.div_ceil(1000);
        v.validate_nbf = true;
        // A configured `aud` or `iss` must be in the token, not only right when present.
        let mut required = vec!["exp", "sub"];
        v.validate_aud = !self.settings.audience.is_empty();
        if v.validate_aud {
            v.set_audience(&[&self.settings.audience]);
            required.push("aud");
        }
        if !self.settings.issuer.is_empty() {
            v.set_issuer(&[&self.settings.issuer]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let data = decode::<Map<String, Value>>(token, key, &v).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::Signature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYet,
            ErrorKind::InvalidAudience => AuthError::Audience("aud"),
            ErrorKind::InvalidIssuer => AuthError::Audience("iss"),
            ErrorKind::MissingRequiredClaim(c) => AuthError::Claims(format!("no `{c}`")),
            ErrorKind::InvalidClaimFormat(c) => AuthError::Claims(format!("`{c}` is malformed")),
            ErrorKind::Json(e) => AuthError::Claims(e.to_string()),
            ErrorKind::InvalidAlgorithm => AuthError::NoKey(format!("{:?}", header.alg)),
            _ => AuthError::Malformed,
        })?;
        let mut c = data.claims;
        let claim = |c: &Map<String, Value>, name: &str| {
            AuthError::Claims(format!("`{name}` is malformed: {:?}", c.get(name)))
        };
        let sub = match c.remove("sub") {
            Some(Value::String(s)) => s,
            _ => return Err(claim(&c, "sub")),
        };
        crate::protocol::client_id(Some(&sub)).map_err(|e| AuthError::Claims(e.message))?;
        let exp = c
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or_else(|| claim(&c, "exp"))?;
        // Absent: every room. Present, it must be an object of lists (`null` is refused,
        // not taken for "no limits").
        let grants = match c.remove("rooms") {
            None => Grants::All,
            Some(v) => {
                let g: RoomGrants = serde_json::from_value(v)
                    .map_err(|e| AuthError::Claims(format!("`rooms`: {e}")))?;
                g.check().map_err(AuthError::Claims)?;
                Grants::Only(g)
            }
        };
        Ok(Identity {
            client: sub,
            grants,
            expires_ms: exp.saturating_mul(1000),
        })
    }
}

#[cfg(test)]
mod tests;
