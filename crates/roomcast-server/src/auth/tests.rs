//! Tokens made here with the test keys (`tests/keys/`) against every kind of key the
//! server takes, and every way a token can be wrong.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;
use crate::config::Config;

const RSA_KEY: &[u8] = include_bytes!("../../tests/keys/rsa.key");
const EC_KEY: &[u8] = include_bytes!("../../tests/keys/ec.key");
const OTHER_EC_KEY: &[u8] = include_bytes!("../../tests/keys/other-ec.key");
const ED_KEY: &[u8] = include_bytes!("../../tests/keys/ed.key");
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");

fn now() -> u64 {
    crate::now_ms() / 1000
}

fn settings(edit: impl FnOnce(&mut AuthSettings)) -> AuthSettings {
    let mut s = Config::default().auth;
    edit(&mut s);
    s
}

fn token(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).unwrap()
}

fn alice() -> Value {
    json!({"sub": "alice", "exp": now() + 600})
}

#[test]
fn each_kind_of_key_verifies_its_own_algorithms() {
    let hs = Auth::new(&settings(|s| s.jwt_secret = "s3cret".into())).unwrap();
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let t = token(alg, &EncodingKey::from_secret(b"s3cret"), &alice());
        assert_eq!(hs.verify(&t).unwrap().client, "alice", "{alg:?}");
    }
    let cases: [(&str, Algorithm, EncodingKey); 4] = [
        (
            "rsa.pub",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
        ),
        (
            "rsa.pub",
            Algorithm::PS256,
            EncodingKey::from_rsa_pem(RSA_KEY).unwrap(),
        ),
        (
            "ec.pub",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_KEY).unwrap(),
        ),
        (
            "ed.pub",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_KEY).unwrap(),
        ),
    ];
    for (file, alg, key) in cases {
        let auth = Auth::new(&settings(|s| {
            s.jwt_public_key_file = format!("{KEYS}/{file}")
        }))
        .unwrap();
        let t = token(alg, &key, &alice());
        let id = auth.verify(&t).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(id.client, "alice");
        assert_eq!(id.grants, Grants::All);
        // A token of another family finds no key.
        let hs = token(Algorithm::HS256, &EncodingKey::from_secret(b"x"), &alice());
        assert!(
            matches!(auth.verify(&hs), Err(AuthError::NoKey(_))),
            "{file}"
        );
    }
}

#[test]
fn algorithm_confusion_and_none_are_refused() {
    let auth = Auth::new(&settings(|s| {
        s.jwt_public_key_file = format!("{KEYS}/rsa.pub")
    }))
    .unwrap();
    // HS256 "signed" with the public key's PEM bytes as the secret.
    let pem = std::fs::read(format!("{KEYS}/rsa.pub")).unwrap();
    let confused = token(Algorithm::HS256, &EncodingKey::from_secret(&pem), &alice());
    assert!(matches!(auth.verify(&confused), Err(AuthError::NoKey(_))));
    // `alg: none`, unsigned.
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&alice())
    );
    assert_eq!(auth.verify(&none), Err(AuthError::Malformed));
    // A signature by another key of the right family.
    let other = token(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(OTHER_EC_KEY).unwrap(),
        &alice(),
    );
    let ec = Auth::new(&settings(|s| {
        s.jwt_public_key_file = format!("{KEYS}/ec.pub")
    }))
    .unwrap();
    assert_eq!(ec.verify(&other), Err(AuthError::Signature));
    assert_eq!(ec.verify("not.a.jwt"), Err(AuthError::Malformed));
}

#[test]
fn claims_are_checked() {
    let auth = Auth::new(&settings(|s| {
        s.jwt_secret = "k".into();
        s.audience = "roomcast".into();
        s.issuer = "https://issuer.example".into();
    }))
    .unwrap();
    let key = EncodingKey::from_secret(b"k");
    let t = |claims: Value| token(Algorithm::HS256, &key, &claims);
    let good =
        json!({"sub":"alice","exp":now()+60,"aud":"roomcast","iss":"https://issuer.example"});
    assert!(auth.verify(&t(good.clone())).is_ok());
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    assert_eq!(
        auth.verify(&t(with("exp", json!(now() - 60)))),
        Err(AuthError::Expired)
    );
    // Within the 5 s leeway.
    assert!(auth.verify(&t(with("exp", json!(now() - 2)))).is_ok());
    assert_eq!(
        auth.verify(&t(with("nbf", json!(now() + 60)))),
        Err(AuthError::NotYet)
    );
    assert_eq!(
        auth.verify(&t(with("aud", json!("other")))),
        Err(AuthError::Audience("aud"))
    );
    assert_eq!(
        auth.verify(&t(with("iss", json!("other")))),
        Err(AuthError::Audience("iss"))
    );
    // Configured, they must be there: a token without them is not for this server.
    assert!(matches!(
        auth.verify(&t(without("aud"))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(without("iss"))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(with("rooms", json!(null)))),
        Err(AuthError::Claims(_))
    ));
    let huge = with("pad", json!("x".repeat(super::MAX_TOKEN_LEN)));
    assert_eq!(auth.verify(&t(huge)), Err(AuthError::Malformed));
    let too_many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    assert!(matches!(
        auth.verify(&t(with("rooms", json!({"join": too_many})))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(without("exp"))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(without("sub"))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(with("sub", json!("")))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(with("rooms", json!({"join": "lobby"})))),
        Err(AuthError::Claims(_))
    ));
    assert!(matches!(
        auth.verify(&t(with("rooms", json!({"read": ["lobby"]})))),
        Err(AuthError::Claims(_))
    ));
    let id = auth
        .verify(&t(with("rooms", json!({"join": ["lobby", "team:*"]}))))
        .unwrap();
    let room = |n: &str| crate::protocol::RoomName::new(n).unwrap();
    assert!(id.grants.allows(Action::Join, &room("team:1")));
    assert!(!id.grants.allows(Action::Publish, &room("lobby")));
    assert_eq!(id.expires_ms, good["exp"].as_u64().unwrap() * 1000);
}

#[test]
fn admission_follows_auth_required() {
    let key = EncodingKey::from_secret(b"k");
    let t = token(Algorithm::HS256, &key, &alice());
    let off = Auth::new(&settings(|_| {})).unwrap();
    assert!(!off.is_required());
    assert_eq!(off.admit(None, None), Ok(None));
    assert_eq!(
        off.admit(Some("garbage"), None),
        Ok(None),
        "ignored while off"
    );
    let on = Auth::new(&settings(|s| s.jwt_secret = "k".into())).unwrap();
    assert!(on.is_required(), "auto: required once a key is configured");
    assert_eq!(on.admit(None, Some("alice")), Err(AuthError::Missing));
    assert_eq!(
        on.admit(Some(&t), Some("bob")),
        Err(AuthError::ClientMismatch)
    );
    assert_eq!(
        on.admit(Some(&t), Some("alice")).unwrap().unwrap().client,
        "alice"
    );
    assert_eq!(on.admit(Some(&t), None).unwrap().unwrap().client, "alice");
    let optional = Auth::new(&settings(|s| {
        s.jwt_secret = "k".into();
        s.required = "false".into();
    }))
    .unwrap();
    assert_eq!(optional.admit(None, None), Ok(None));
    assert_eq!(optional.admit(Some("bad"), None), Err(AuthError::Malformed));
}

#[test]
fn a_jwks_file_is_read_again_when_it_changes() {
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    let dir = std::env::temp_dir().join(format!("roomcast-jwks-{}", crate::random_id(4)));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keys.json");
    let jwk = |pem: &[u8], kid: &str| {
        let mut k =
            Jwk::from_encoding_key(&EncodingKey::from_ec_pem(pem).unwrap(), Algorithm::ES256)
                .unwrap();
        k.common.key_id = Some(kid.into());
        k
    };
    let write = |keys: Vec<Jwk>| {
        std::fs::write(&path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
    };
    // An encryption key and a type this crate does not know are skipped; the signing
    // key still loads.
    let mut enc = jwk(OTHER_EC_KEY, "enc");
    enc.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Encryption);
    let mut set = serde_json::to_value(JwkSet {
        keys: vec![jwk(EC_KEY, "one"), enc],
    })
    .unwrap();
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "quantum", "kid": "q"}));
    std::fs::write(&path, set.to_string()).unwrap();
    let auth = Auth::new(&settings(|s| s.jwks_file = path.display().to_string())).unwrap();
    let signed = |pem: &[u8], kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        encode(&h, &alice(), &EncodingKey::from_ec_pem(pem).unwrap()).unwrap()
    };
    assert!(auth.verify(&signed(EC_KEY, "one")).is_ok());
    assert!(
        auth.verify(&signed(OTHER_EC_KEY, "enc")).is_err(),
        "an encryption key verified"
    );
    assert!(matches!(
        auth.verify(&signed(EC_KEY, "unknown")),
        Err(AuthError::NoKey(_))
    ));
    assert!(auth.verify(&signed(OTHER_EC_KEY, "two")).is_err());
    // A second key appears in the file: it verifies within the reload period.
    write(vec![jwk(EC_KEY, "one"), jwk(OTHER_EC_KEY, "two")]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while auth.verify(&signed(OTHER_EC_KEY, "two")).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was not picked up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A broken file keeps the keys that were there.
    std::fs::write(&path, b"{not json").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(auth.verify(&signed(EC_KEY, "one")).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
