//! Token mechanics: generation, the text format, hashing and constant-time comparison.
//!
//! A token reads `etcdca_<id>_<secret>`: the id (64 bits, hex) finds the row, the secret (256
//! bits, hex) is checked against the stored SHA-256 in constant time. The secret is shown once
//! and never stored or logged.

use subtle::ConstantTimeEq;

use super::{AuthorityError, Fault};

const PREFIX: &str = "etcdca_";

/// A freshly generated token: its public id and the full text to hand to its holder.
pub struct GeneratedToken {
    pub id: String,
    pub text: String,
    pub secret_sha256: Vec<u8>,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], AuthorityError> {
    Ok(crate::pki::random_bytes().map_err(|_| Fault::Random)?)
}

fn hash(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

pub fn generate() -> Result<GeneratedToken, AuthorityError> {
    let id = hex::encode(random_bytes::<8>()?);
    let secret = hex::encode(random_bytes::<32>()?);
    Ok(GeneratedToken {
        text: format!("{PREFIX}{id}_{secret}"),
        secret_sha256: hash(&secret),
        id,
    })
}

/// Splits a token into (id, secret), or None when it is not shaped like one of ours.
pub fn parse(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.trim().strip_prefix(PREFIX)?.split_once('_')?;
    let hex_of = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 16) && hex_of(secret, 64)).then_some((id, secret))
}

/// True when `secret` hashes to `stored`, compared in constant time.
pub fn secret_matches(stored: &[u8], secret: &str) -> bool {
    bool::from(hash(secret).ct_eq(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_their_secret_matches() {
        let token = generate().unwrap();
        let (id, secret) = parse(&token.text).unwrap();
        assert_eq!(id, token.id);
        assert!(secret_matches(&token.secret_sha256, secret));
        let other = generate().unwrap();
        let (_, other_secret) = parse(&other.text).unwrap();
        assert!(!secret_matches(&token.secret_sha256, other_secret));
        assert!(parse("etcdca_short_secret").is_none());
        assert!(parse("").is_none());
        assert!(!token.text[7..].contains(&hex::encode(&token.secret_sha256)));
    }
}
