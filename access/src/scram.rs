//! SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it.
//!
//! An account's password is kept only as its verifier — salt, iteration
//! count, `StoredKey` and `ServerKey`, written as PostgreSQL writes
//! `pg_authid.rolpassword`:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
//! Neither key lets anyone log in: the client proves it knows the password
//! (`ClientKey`, of which `StoredKey` is the hash) without sending it, and
//! the server proves it holds the verifier with `ServerKey`.
//!
//! [`Exchange`] is the server's side of one authentication: the
//! client-first message in, the server-first message out; the client-final
//! message in, the server-final message out (or a refusal).

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac, pbkdf2};

use crate::AccessError;

/// PostgreSQL's default iteration count (`scram_iterations`).
pub const ITERATIONS: u32 = 4096;
const SALT_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// What the warehouse keeps of a password.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verifier(SCRAM-SHA-256, redacted)")
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn sha256(bytes: &[u8]) -> [u8; KEY_LEN] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0; KEY_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// Equal in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random<const N: usize>() -> Result<[u8; N], AccessError> {
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AccessError::Random)?;
    Ok(bytes)
}

/// 32 random bytes (a server's secret for decoy verifiers).
pub fn secret() -> Result<[u8; 32], AccessError> {
    random()
}

impl Verifier {
    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Result<Verifier, AccessError> {
        if password.is_empty() {
            return Err(AccessError::EmptyPassword);
        }
        Ok(Self::derive(password, &random::<SALT_LEN>()?, ITERATIONS))
    }

    fn derive(password: &str, salt: &[u8], iterations: u32) -> Verifier {
        // As PostgreSQL: a password SASLprep rejects is used as it is.
        let normalized = stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password));
        let mut salted = [0; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap_or(NonZeroU32::MIN),
            salt,
            normalized.as_bytes(),
            &mut salted,
        );
        Verifier {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&hmac_sha256(&salted, b"Client Key")),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Whether `password` is the one this verifier was made from (for the
    /// cleartext password method, when an operator allows it).
    pub fn matches(&self, password: &str) -> bool {
        let candidate = Self::derive(password, &self.salt, self.iterations);
        same(&candidate.stored_key, &self.stored_key)
    }

    /// A verifier no password matches, stable for `name`: an unknown user
    /// goes through the same exchange as a known one and fails at its end,
    /// so the exchange does not tell which user names exist.
    pub fn decoy(name: &str, secret: &[u8]) -> Verifier {
        let mut seed = secret.to_vec();
        seed.extend_from_slice(name.as_bytes());
        let salt = sha256(&seed);
        Verifier {
            iterations: ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            // No ClientKey hashes to this (it is not a SHA-256 output of
            // anything anyone knows); the proof check fails.
            stored_key: hmac_sha256(&salt, b"decoy stored key"),
            server_key: hmac_sha256(&salt, b"decoy server key"),
        }
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            BASE64.encode(&self.salt),
            BASE64.encode(self.stored_key),
            BASE64.encode(self.server_key)
        )
    }
}

impl FromStr for Verifier {
    type Err = AccessError;

    fn from_str(s: &str) -> Result<Verifier, AccessError> {
        let bad = || AccessError::BadVerifier;
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iterations, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let key = |k: &str| -> Result<[u8; KEY_LEN], AccessError> {
            BASE64
                .decode(k)
                .ok()
                .and_then(|v| v.try_into().ok())
                .ok_or_else(bad)
        };
        Ok(Verifier {
            iterations: iterations.parse().ok().filter(|i| *i > 0).ok_or_else(bad)?,
            salt: BASE64.decode(salt).map_err(|_| bad())?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// Why an exchange was refused. A wrong password is `Failed`; the others
/// are protocol violations by the client.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported by this server")]
    ChannelBinding,
    #[error("the proof does not match")]
    Failed,
}

/// The server's side of one SCRAM-SHA-256 exchange, after the client-first
/// message.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl Exchange {
    /// Reads the client-first message and makes the server-first message.
    /// The user name inside it is ignored, as PostgreSQL ignores it: the
    /// user is the one of the startup packet.
    pub fn start(client_first: &str, verifier: Verifier) -> Result<Exchange, ScramError> {
        // gs2-header: a channel-binding flag, an optional authzid, then the
        // bare message.
        let (flag, rest) = client_first
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        match flag {
            // "n": the client does not bind; "y": it could, but thinks the
            // server cannot — true, this server offers no -PLUS mechanism.
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identities are not supported",
            ));
        }
        let gs2_header = format!("{flag},{authzid},");
        let mut attributes = bare.split(',');
        let user = attributes.next().unwrap_or_default();
        if user.starts_with("m=") {
            return Err(ScramError::Malformed(
                "mandatory extensions are not supported",
            ));
        }
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed("no user name attribute"));
        }
        let client_nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b','))
            .ok_or(ScramError::Malformed("no client nonce"))?;
        let server_nonce =
            BASE64.encode(random::<18>().map_err(|_| ScramError::Malformed("no randomness"))?);
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok(Exchange {
            verifier,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
        })
    }

    /// The server-first message to send.
    pub fn server_first(&self) -> &str {
        &self.server_first
    }

    /// Checks the client's proof; the server-final message on success.
    pub fn finish(&self, client_final: &str) -> Result<String, ScramError> {
        let (without_proof, proof) = client_final
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut attributes = without_proof.split(',');
        let binding = attributes
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(ScramError::Malformed("no channel binding attribute"))?;
        if BASE64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        let nonce = attributes
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(ScramError::Malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(ScramError::Malformed("the nonce does not match"));
        }
        let proof: [u8; KEY_LEN] = BASE64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("the proof is not 32 bytes of base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac_sha256(&self.verifier.stored_key, auth_message.as_bytes());
        let mut client_key = [0; KEY_LEN];
        for (k, (p, s)) in client_key.iter_mut().zip(proof.iter().zip(signature)) {
            *k = p ^ s;
        }
        if !same(&sha256(&client_key), &self.verifier.stored_key) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac_sha256(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's side, by RFC 5802, from the password.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = BASE64
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields.next().unwrap()[2..].parse().unwrap();
        let mut salted = [0; KEY_LEN];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let client_key = hmac_sha256(&salted, b"Client Key");
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac_sha256(&sha256(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature)
            .map(|(k, s)| k ^ s)
            .collect();
        format!("{without_proof},p={}", BASE64.encode(proof))
    }

    #[test]
    fn the_right_password_is_accepted_and_the_server_proves_itself() {
        let verifier = Verifier::new("pencil").unwrap();
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let exchange = Exchange::start(&format!("n,,{bare}"), verifier.clone()).unwrap();
        let last = client_final("pencil", bare, exchange.server_first());
        let server_final = exchange.finish(&last).unwrap();
        assert!(server_final.starts_with("v="));
        assert_eq!(
            Exchange::start(&format!("n,,{bare}"), verifier.clone()).and_then(|e| {
                let last = client_final("wrong", bare, e.server_first());
                e.finish(&last)
            }),
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn rfc_7677_test_vector_verifier() {
        // RFC 7677 §3: user "user", password "pencil", salt
        // W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = Verifier::derive("pencil", &salt, 4096);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let exchange = Exchange {
            verifier: v,
            gs2_header: "n,,".into(),
            client_first_bare: bare.into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
        };
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.finish(client_final).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn verifiers_round_trip_and_match_their_password_only() {
        let v = Verifier::new("mật khẩu").unwrap();
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert!(!text.contains("mật khẩu"));
        let back: Verifier = text.parse().unwrap();
        assert_eq!(back, v);
        assert!(back.matches("mật khẩu"));
        assert!(!back.matches("mat khau"));
        assert!("md5abc".parse::<Verifier>().is_err());
        assert!(Verifier::new("").is_err());
    }

    #[test]
    fn decoys_refuse_every_password_and_protocol_violations_are_told_apart() {
        let bare = "n=ghost,r=abc";
        let exchange =
            Exchange::start(&format!("n,,{bare}"), Verifier::decoy("ghost", b"k")).unwrap();
        let last = client_final("anything", bare, exchange.server_first());
        assert_eq!(exchange.finish(&last), Err(ScramError::Failed));
        let v = Verifier::new("x").unwrap();
        assert_eq!(
            Exchange::start("p=tls-server-end-point,,n=u,r=abc", v.clone()).err(),
            Some(ScramError::ChannelBinding)
        );
        assert!(Exchange::start("garbage", v.clone()).is_err());
        assert!(Exchange::start("n,,n=u", v.clone()).is_err());
        let e = Exchange::start("n,,n=u,r=abc", v).unwrap();
        assert!(matches!(
            e.finish("c=biws,r=other,p=AAAA"),
            Err(ScramError::Malformed(_))
        ));
    }
}
