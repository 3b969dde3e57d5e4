//! CA private keys at rest: a PKCS#8 key sealed with a passphrase.
//!
//! The passphrase is stretched with PBKDF2-HMAC-SHA256 and a random 16-byte salt into an
//! AES-256-GCM key; the sealed file is PEM (`ETCD-CA ENCRYPTED PRIVATE KEY`) holding
//! `version (1) | iterations (u32) | salt (16) | nonce (12) | ciphertext and tag`, with the header
//! bytes authenticated too. A plain `PRIVATE KEY` file is only ever written when the operator
//! asked for an unencrypted key.

use std::num::NonZeroU32;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::{AuthorityError, Fault};

/// PEM label of a sealed key.
pub const LABEL: &str = "ETCD-CA ENCRYPTED PRIVATE KEY";
const VERSION: u8 = 1;
/// PBKDF2 iterations for new keys (OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
pub const DEFAULT_ITERATIONS: u32 = 600_000;

/// A passphrase, wiped from memory when dropped.
#[derive(Clone)]
pub struct Passphrase(zeroize::Zeroizing<Vec<u8>>);

impl Passphrase {
    /// A passphrase from its text (a trailing newline, as files have, is not part of it).
    pub fn new(text: &str) -> Result<Self, AuthorityError> {
        let trimmed = text.trim_end_matches(['\n', '\r']);
        if trimmed.len() < 8 {
            return Err(
                Fault::Passphrase("the passphrase must be at least 8 characters".into()).into(),
            );
        }
        Ok(Self(zeroize::Zeroizing::new(trimmed.as_bytes().to_vec())))
    }

    /// A random passphrase (32 bytes of entropy, hex).
    pub fn generate() -> Result<(Self, zeroize::Zeroizing<String>), AuthorityError> {
        let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
        crate::pki::fill_random(bytes.as_mut()).map_err(|_| Fault::Random)?;
        let text = zeroize::Zeroizing::new(hex::encode(bytes.as_ref()));
        Ok((Self::new(&text)?, text))
    }
}

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

fn derive_key(
    passphrase: &Passphrase,
    salt: &[u8],
    iterations: NonZeroU32,
) -> Result<LessSafeKey, AuthorityError> {
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        &passphrase.0,
        key.as_mut(),
    );
    let unbound = UnboundKey::new(&AES_256_GCM, key.as_ref()).map_err(|_| Fault::Random)?;
    Ok(LessSafeKey::new(unbound))
}

/// Seals PKCS#8 DER into the PEM text of a sealed key file.
pub fn seal(
    pkcs8: &[u8],
    passphrase: &Passphrase,
    iterations: u32,
) -> Result<String, AuthorityError> {
    let iterations = NonZeroU32::new(iterations.max(1)).unwrap_or(NonZeroU32::MIN);
    let salt = crate::pki::random_bytes::<16>().map_err(|_| Fault::Random)?;
    let nonce = crate::pki::random_bytes::<12>().map_err(|_| Fault::Random)?;
    let mut header = vec![VERSION];
    header.extend_from_slice(&iterations.get().to_be_bytes());
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    let key = derive_key(passphrase, &salt, iterations)?;
    let mut sealed = pkcs8.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(&header),
        &mut sealed,
    )
    .map_err(|_| Fault::Passphrase("cannot seal the key".into()))?;
    header.extend_from_slice(&sealed);
    Ok(pem::encode_config(
        &pem::Pem::new(LABEL, header),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    ))
}

/// True when a key file's text is sealed.
pub fn is_sealed(text: &str) -> bool {
    text.contains(&format!("BEGIN {LABEL}"))
}

/// The PEM text of the key in a key file: opened with the passphrase if it is sealed.
pub fn open(
    text: &str,
    passphrase: Option<&Passphrase>,
) -> Result<zeroize::Zeroizing<String>, AuthorityError> {
    if !is_sealed(text) {
        return Ok(zeroize::Zeroizing::new(text.to_string()));
    }
    let passphrase = passphrase.ok_or_else(|| {
        Fault::Passphrase(
            "the CA key is encrypted: give its passphrase with --passphrase-file, ETCD_CA_PASSPHRASE_FILE or ETCD_CA_PASSPHRASE".into(),
        )
    })?;
    let block =
        pem::parse(text).map_err(|e| Fault::Passphrase(format!("malformed key file: {e}")))?;
    let bytes = block.contents();
    let header_len = 1 + 4 + 16 + 12;
    if bytes.len() < header_len + 16 || bytes[0] != VERSION {
        return Err(Fault::Passphrase("malformed or unknown key file version".into()).into());
    }
    let (header, sealed) = bytes.split_at(header_len);
    let iterations = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| Fault::Passphrase("malformed key file".into()))?;
    let salt = &header[5..21];
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&header[21..33]);
    let key = derive_key(passphrase, salt, iterations)?;
    let mut buffer = zeroize::Zeroizing::new(sealed.to_vec());
    let plain = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(header),
            buffer.as_mut(),
        )
        .map_err(|_| Fault::Passphrase("wrong passphrase (or a damaged key file)".into()))?;
    Ok(zeroize::Zeroizing::new(pem::encode_config(
        &pem::Pem::new("PRIVATE KEY", plain.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_passphrase() {
        let pass = Passphrase::new("correct horse battery\n").unwrap();
        let sealed = seal(b"pkcs8 bytes", &pass, 1000).unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("pkcs8"));
        let opened = open(&sealed, Some(&pass)).unwrap();
        assert_eq!(
            pem::parse(opened.as_str()).unwrap().contents(),
            b"pkcs8 bytes"
        );

        let wrong = Passphrase::new("correct horse battery staple").unwrap();
        assert!(open(&sealed, Some(&wrong))
            .unwrap_err()
            .to_string()
            .contains("wrong passphrase"));
        assert!(open(&sealed, None)
            .unwrap_err()
            .to_string()
            .contains("--passphrase-file"));
        // A flipped byte anywhere (header included) is detected.
        let mut bytes = pem::parse(&sealed).unwrap().into_contents();
        bytes[3] ^= 1;
        let tampered = pem::encode(&pem::Pem::new(LABEL, bytes));
        assert!(open(&tampered, Some(&pass)).is_err());
        assert!(Passphrase::new("short").is_err());
    }

    #[test]
    fn plain_keys_pass_through() {
        let plain = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(open(plain, None).unwrap().as_str(), plain);
    }
}
