//! The credentials file of `--creds`: a NATS user JWT and the user's nkey seed, each between
//! delimiter lines, as the NATS tools write it:
//!
//! ```text
//! -----BEGIN NATS USER JWT-----
//! eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ...
//! ------END NATS USER JWT------
//!
//! -----BEGIN USER NKEY SEED-----
//! SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM
//! ------END USER NKEY SEED------
//! ```
//!
//! The file is read and checked before the first connection: the client would accept a seed
//! that does not belong to the JWT and let the server refuse it with a bare "authorization
//! violation". When a server refuses a well-formed file, the claims read here (the account that
//! signed the user, the expiry) let the error say what to fix.

use std::path::{Path, PathBuf};

use data_encoding::BASE64URL_NOPAD;
use serde::Deserialize;

use crate::error::{BridgeError, Result};

/// A credentials file that passed the local checks.
#[derive(Clone)]
pub struct Creds {
    /// The file.
    pub path: PathBuf,
    /// Its text, as handed to the client.
    pub text: String,
    /// The user's public key (the JWT's subject).
    pub user: String,
    /// The user's name in the JWT, if any.
    pub name: Option<String>,
    /// The public key of the account the user belongs to (`issuer_account` when the JWT was
    /// signed with one of the account's signing keys, otherwise the issuer).
    pub account: String,
    /// Expiry of the user JWT, Unix seconds.
    pub expires: Option<i64>,
}

impl std::fmt::Debug for Creds {
    // The text holds the seed: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("path", &self.path)
            .field("user", &self.user)
            .field("name", &self.name)
            .field("account", &self.account)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    iss: Option<String>,
    name: Option<String>,
    exp: Option<i64>,
    /// Version 1 JWTs carry the type here.
    #[serde(rename = "type")]
    kind: Option<String>,
    nats: Option<NatsClaims>,
}

#[derive(Deserialize)]
struct NatsClaims {
    #[serde(rename = "type")]
    kind: Option<String>,
    issuer_account: Option<String>,
}

impl Creds {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Creds> {
        let text = std::fs::read_to_string(path).map_err(|source| BridgeError::Credentials {
            path: path.to_path_buf(),
            source,
        })?;
        Creds::parse(path, text).map_err(|problem| BridgeError::CredsInvalid {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Checks the text of a credentials file: a user JWT that decodes, and a seed whose public
    /// key is the JWT's subject. The error says what is wrong.
    pub fn parse(path: &Path, text: String) -> std::result::Result<Creds, String> {
        let values = decorated_values(&text);
        let Some(jwt) = values.first() else {
            return Err("holds no user JWT (expected a line -----BEGIN NATS USER JWT-----, the JWT, a line ------END NATS USER JWT------, then the nkey seed between its own delimiter lines)".to_string());
        };
        let Some(seed) = values.get(1) else {
            return Err("holds the user JWT but no nkey seed (expected after the JWT: a line -----BEGIN USER NKEY SEED-----, the seed, a line ------END USER NKEY SEED------)".to_string());
        };
        let claims =
            decode_claims(jwt).map_err(|e| format!("the user JWT cannot be decoded: {e}"))?;
        let kind = claims
            .nats
            .as_ref()
            .and_then(|n| n.kind.clone())
            .or(claims.kind.clone())
            .unwrap_or_default();
        if kind != "user" {
            return Err(if kind.is_empty() {
                "holds a JWT without a type, not a user JWT".to_string()
            } else {
                format!("holds an {kind} JWT, not a user JWT")
            });
        }
        let (Some(user), Some(iss)) = (claims.sub, claims.iss) else {
            return Err("the user JWT has no subject (sub) or no issuer (iss)".to_string());
        };
        let key = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| format!("the nkey seed cannot be decoded: {e}"))?;
        let seed_public = key.public_key();
        if seed_public != user {
            return Err(format!(
                "the nkey seed is not the user's: its public key is {seed_public}, the user JWT is for {user}"
            ));
        }
        let account = claims
            .nats
            .and_then(|n| n.issuer_account)
            .filter(|a| !a.is_empty())
            .unwrap_or(iss);
        Ok(Creds {
            path: path.to_path_buf(),
            user,
            name: claims.name.filter(|n| !n.is_empty()),
            account,
            expires: claims.exp.filter(|&e| e > 0),
            text,
        })
    }

    /// Whether the user JWT has expired at `now` (Unix seconds).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }
}

/// Seconds since the Unix epoch by the local clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Unix seconds as an RFC 3339 UTC time (or the number, if out of range).
pub fn format_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("Unix time {unix}"))
}

/// The values of a credentials file: each a single line of `[A-Za-z0-9_.=-]` between two
/// delimiter lines (at least three dashes at both ends), in order, the closing delimiter of
/// one not serving as the opening one of the next. The client parses the file the same way:
/// the first value is the JWT, the second the seed.
fn decorated_values(text: &str) -> Vec<&str> {
    let is_delimiter = |l: &str| {
        let l = l.trim_end();
        l.len() >= 6 && l.starts_with("---") && l.ends_with("---")
    };
    let is_value = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'='))
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    let mut i = 1;
    while i + 1 < lines.len() {
        match (lines.get(i - 1), lines.get(i), lines.get(i + 1)) {
            (Some(open), Some(value), Some(close))
                if is_delimiter(open) && is_value(value.trim()) && is_delimiter(close) =>
            {
                values.push(value.trim());
                i += 3;
            }
            _ => i += 1,
        }
    }
    values
}

fn decode_claims(jwt: &str) -> std::result::Result<Claims, String> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(body), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a JWT has three dot-separated parts".to_string());
    };
    let bytes = BASE64URL_NOPAD
        .decode(body.as_bytes())
        .map_err(|e| format!("its claims are not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("its claims are not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#),
            BASE64URL_NOPAD.encode(claims.as_bytes())
        )
    }

    fn creds_text(jwt: &str, seed: &str) -> String {
        format!(
            "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\n\
             -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
        )
    }

    fn parse(text: String) -> std::result::Result<Creds, String> {
        Creds::parse(Path::new("u.creds"), text)
    }

    #[test]
    fn a_good_file_is_read_with_its_account_and_expiry() {
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let claims = format!(
            r#"{{"sub":"{}","iss":"AISSUER","name":"u1","exp":1700000000,"nats":{{"type":"user","version":2}}}}"#,
            user.public_key()
        );
        let c = parse(creds_text(&jwt(&claims), &seed)).unwrap();
        assert_eq!(c.user, user.public_key());
        assert_eq!(c.account, "AISSUER");
        assert_eq!(c.name.as_deref(), Some("u1"));
        assert_eq!(c.expires, Some(1_700_000_000));
        assert!(c.expired_at(1_700_000_000));
        assert!(!c.expired_at(1_699_999_999));
        assert!(!format!("{c:?}").contains(&seed));
        // Signed with a signing key: the account is issuer_account. CRLF line ends work.
        let claims = format!(
            r#"{{"sub":"{}","iss":"ASIGNINGKEY","nats":{{"type":"user","issuer_account":"AACCOUNT"}}}}"#,
            user.public_key()
        );
        let c = parse(creds_text(&jwt(&claims), &seed).replace('\n', "\r\n")).unwrap();
        assert_eq!(c.account, "AACCOUNT");
        assert_eq!(c.expires, None);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let user = nkeys::KeyPair::new_user();
        let seed = user.seed().unwrap();
        let good = format!(
            r#"{{"sub":"{}","iss":"AISSUER","nats":{{"type":"user"}}}}"#,
            user.public_key()
        );
        let err = |text: String| parse(text).unwrap_err();
        assert!(err("not a creds file\n".to_string()).contains("holds no user JWT"));
        assert!(
            err(format!(
                "-----BEGIN NATS USER JWT-----\n{}\n------END NATS USER JWT------\n",
                jwt(&good)
            ))
            .contains("no nkey seed")
        );
        assert!(err(creds_text("abc", &seed)).contains("three dot-separated parts"));
        assert!(err(creds_text("a.b.c", &seed)).contains("not base64url"));
        assert!(err(creds_text(&jwt("{"), &seed)).contains("not JSON"));
        let account = jwt(r#"{"sub":"AX","iss":"OX","nats":{"type":"account"}}"#);
        assert!(err(creds_text(&account, &seed)).contains("an account JWT, not a user JWT"));
        assert!(err(creds_text(&jwt(&good), "SUNOTASEED")).contains("seed cannot be decoded"));
        let other = nkeys::KeyPair::new_user().seed().unwrap();
        let e = err(creds_text(&jwt(&good), &other));
        assert!(
            e.contains("not the user's") && e.contains(&user.public_key()),
            "{e}"
        );
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(format_time(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_time(i64::MAX), format!("Unix time {}", i64::MAX));
    }
}
