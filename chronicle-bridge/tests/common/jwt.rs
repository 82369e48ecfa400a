//! NATS decentralized authentication made at test time: an operator, accounts signed by it
//! (with or without JetStream), users signed by an account, their `.creds` files, and a
//! nats-server configuration that trusts the operator and preloads the accounts (`resolver:
//! MEMORY`).
//!
//! A NATS JWT is `base64url(header).base64url(claims).base64url(signature)` without padding,
//! the header `{"typ":"JWT","alg":"ed25519-nkey"}`, the signature an ed25519 signature by the
//! issuer's nkey over `header.claims` (the two encoded parts and the dot). The claims carry
//! `iss` (the signer's public key), `sub` (the subject's public key), `iat`, `name`, optional
//! `exp`, `jti` (base32 without padding of the SHA-512/256 hash of the standard claims with
//! `jti` left out, as the reference tools compute it; nats-server does not check it) and a
//! `nats` object with `type` (`operator`, `account`, `user`), `version: 2` and the type's
//! fields.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The standard claims, in the order (and with the omissions) the reference encoder
/// serializes them to compute `jti`.
#[derive(Serialize)]
struct StdClaims<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    iat: i64,
    iss: &'a str,
    name: &'a str,
    sub: &'a str,
}

/// Signs a JWT for `subject` with `issuer`'s key; `nats` is the type-specific object (its
/// `type` and `version` are added here).
fn encode(
    issuer: &KeyPair,
    subject: &str,
    name: &str,
    kind: &str,
    expires: Option<i64>,
    mut nats: Value,
) -> String {
    let iss = issuer.public_key();
    let std_claims = StdClaims {
        exp: expires,
        iat: now(),
        iss: &iss,
        name,
        sub: subject,
    };
    let jti = BASE32_NOPAD.encode(&Sha512_256::digest(
        serde_json::to_vec(&std_claims).unwrap(),
    ));
    let mut claims = serde_json::to_value(&std_claims).unwrap();
    let obj = claims.as_object_mut().unwrap();
    obj.insert("jti".into(), Value::String(jti));
    let n = nats.as_object_mut().unwrap();
    n.insert("type".into(), Value::String(kind.into()));
    n.insert("version".into(), json!(2));
    obj.insert("nats".into(), nats);
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(&serde_json::to_vec(&claims).unwrap());
    let signing_input = format!("{header}.{body}");
    let sig = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", BASE64URL_NOPAD.encode(&sig))
}

/// The decoded claims of a JWT (no verification).
pub fn claims(jwt: &str) -> Value {
    let body = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&BASE64URL_NOPAD.decode(body.as_bytes()).unwrap()).unwrap()
}

/// Checks a JWT's signature with the public key in its `iss` claim.
pub fn signature_is_valid(jwt: &str) -> bool {
    let Some((input, sig)) = jwt.rsplit_once('.') else {
        return false;
    };
    let Ok(sig) = BASE64URL_NOPAD.decode(sig.as_bytes()) else {
        return false;
    };
    let iss = claims(jwt)["iss"].as_str().unwrap_or_default().to_string();
    KeyPair::from_public_key(&iss).is_ok_and(|k| k.verify(input.as_bytes(), &sig).is_ok())
}

/// An operator: the root of trust the server is configured with.
pub struct Operator {
    key: KeyPair,
    pub jwt: String,
}

/// An account signed by an operator.
pub struct Account {
    key: KeyPair,
    pub name: String,
    pub jwt: String,
}

/// A user signed by an account.
pub struct User {
    key: KeyPair,
    pub jwt: String,
}

impl Operator {
    /// A new operator with a self-signed JWT.
    pub fn new(name: &str) -> Operator {
        let key = KeyPair::new_operator();
        let jwt = encode(&key, &key.public_key(), name, "operator", None, json!({}));
        Operator { key, jwt }
    }

    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// An account signed by this operator. With `jetstream`, the account's limits allow
    /// JetStream (unlimited memory and disk storage, streams and consumers); without, the
    /// JetStream limits are absent, which disables JetStream for the account.
    pub fn account(&self, name: &str, jetstream: bool) -> Account {
        let key = KeyPair::new_account();
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        if jetstream {
            let l = limits.as_object_mut().unwrap();
            for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
                l.insert(k.into(), json!(-1));
            }
        }
        let jwt = encode(
            &self.key,
            &key.public_key(),
            name,
            "account",
            None,
            json!({ "limits": limits, "default_permissions": { "pub": {}, "sub": {} } }),
        );
        Account {
            key,
            name: name.to_string(),
            jwt,
        }
    }
}

impl Account {
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// A user signed by this account, allowed everything, expiring at `expires` (Unix
    /// seconds) if given.
    pub fn user(&self, name: &str, expires: Option<i64>) -> User {
        let key = KeyPair::new_user();
        let jwt = encode(
            &self.key,
            &key.public_key(),
            name,
            "user",
            expires,
            json!({ "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1 }),
        );
        User { key, jwt }
    }
}

impl User {
    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    /// The `.creds` text: the user JWT and the user's nkey seed, each between the
    /// delimiters the NATS tools write.
    pub fn creds(&self) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            self.jwt,
            self.key.seed().unwrap()
        )
    }

    /// Writes the `.creds` file to `path` and returns the path.
    pub fn write_creds(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.creds()).unwrap();
        path.to_path_buf()
    }
}

/// A nats-server configuration in operator mode: trusts `operator`, knows `accounts` (the
/// in-memory resolver, preloaded), uses `system` as the system account, listens on
/// 127.0.0.1:`port` and keeps JetStream data under `store`.
pub fn server_config(
    operator: &Operator,
    system: &Account,
    accounts: &[&Account],
    port: u16,
    store: &Path,
) -> String {
    let mut preload = String::new();
    for a in std::iter::once(system).chain(accounts.iter().copied()) {
        preload.push_str(&format!("    {}: \"{}\"\n", a.public_key(), a.jwt));
    }
    format!(
        "listen: \"127.0.0.1:{port}\"\n\
         server_name: jwt\n\
         operator: \"{}\"\n\
         system_account: {}\n\
         resolver: MEMORY\n\
         resolver_preload: {{\n{preload}}}\n\
         jetstream {{\n    store_dir: \"{}\"\n}}\n",
        operator.jwt,
        system.public_key(),
        store.display()
    )
}
