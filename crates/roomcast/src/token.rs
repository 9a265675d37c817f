//! `roomcast token`: makes a JWT the server accepts, for trying auth out and for scripts.
//! The server's own checks are in `roomcast-server` (`auth`); this only signs.

use std::path::PathBuf;
use std::process::ExitCode;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

/// Makes a token: `roomcast token --sub alice --secret S --rooms '{"join":["lobby"]}'`.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The client id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Sign with this shared secret (the server's auth.jwt_secret), HS256 by default.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", conflicts_with = "key")]
    pub secret: Option<String>,
    /// Sign with this PEM private key: RSA (RS256 by default), EC P-256 (ES256) or
    /// Ed25519 (EdDSA).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The algorithm, when not the key's default (HS384, HS512, RS384, PS256, ES384, ...).
    #[arg(long)]
    pub alg: Option<String>,
    /// Seconds from now until the token expires (`exp`).
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// The `rooms` claim, as JSON: `{"join":["lobby","team:*"],"publish":["team:42"]}`.
    /// Without it the token allows every room.
    #[arg(long, value_name = "JSON")]
    pub rooms: Option<String>,
    /// The `aud` claim.
    #[arg(long)]
    pub aud: Option<String>,
    /// The `iss` claim.
    #[arg(long)]
    pub iss: Option<String>,
    /// The `kid` header (which key of a JWKS verifies it).
    #[arg(long)]
    pub kid: Option<String>,
}

/// Runs `roomcast token`: prints the token on stdout.
pub fn run(args: TokenArgs) -> ExitCode {
    match make(&args) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roomcast token: {e}");
            ExitCode::from(2)
        }
    }
}

fn make(args: &TokenArgs) -> Result<String, String> {
    let (key, default_alg) = match (&args.secret, &args.key) {
        (Some(secret), None) => (
            EncodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        ),
        (None, Some(path)) => {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            [
                (EncodingKey::from_rsa_pem(&pem), Algorithm::RS256),
                (EncodingKey::from_ec_pem(&pem), Algorithm::ES256),
                (EncodingKey::from_ed_pem(&pem), Algorithm::EdDSA),
            ]
            .into_iter()
            .find_map(|(k, alg)| k.ok().map(|k| (k, alg)))
            .ok_or_else(|| {
                format!(
                    "{}: not a PEM RSA, EC or Ed25519 private key",
                    path.display()
                )
            })?
        }
        _ => return Err("give --secret or --key".into()),
    };
    let alg = match &args.alg {
        Some(a) => a
            .parse::<Algorithm>()
            .map_err(|_| format!("unknown algorithm {a:?}"))?,
        None => default_alg,
    };
    if alg.family() != default_alg.family() {
        return Err(format!("{alg:?} does not go with this key"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let mut claims = json!({"sub": args.sub, "iat": now, "exp": now + args.ttl});
    if let Some(rooms) = &args.rooms {
        let v: Value = serde_json::from_str(rooms).map_err(|e| format!("--rooms: {e}"))?;
        if !v.is_object() {
            return Err("--rooms must be a JSON object".into());
        }
        claims["rooms"] = v;
    }
    if let Some(aud) = &args.aud {
        claims["aud"] = aud.as_str().into();
    }
    if let Some(iss) = &args.iss {
        claims["iss"] = iss.as_str().into();
    }
    let mut header = Header::new(alg);
    header.kid = args.kid.clone();
    encode(&header, &claims, &key).map_err(|e| e.to_string())
}

/// A token's `sub`, read without checking it (the server checks): the client id a CLI
/// command goes by when it is given a token and no --client.
pub fn subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}
