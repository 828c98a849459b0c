//! Encryption of tenant shared secrets at rest (AES-256-GCM).
//!
//! Each ciphertext records the id of the key that made it, so a key can be rotated: new
//! writes use the current key, reads find older keys among `secret_keys_previous`. The
//! tenant's clientKey is bound in as associated data, so a ciphertext copied onto another
//! tenant's row does not decrypt.

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use crate::connect::SharedSecret;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("must be base64 of exactly 32 bytes")]
    Current,
    #[error("entry {0} must be base64 of exactly 32 bytes")]
    Previous(usize),
    #[error("no configured key has id {0}; add the old key to secret_keys_previous")]
    UnknownKeyId(String),
    #[error("secret could not be decrypted (wrong key or tampered data)")]
    Decrypt,
    #[error("secret could not be encrypted")]
    Encrypt,
}

/// A ciphertext as stored: key id, 96-bit nonce, AES-GCM output (with tag).
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptedSecret {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for EncryptedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptedSecret")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct KeyEntry {
    id: String,
    cipher: Aes256Gcm,
}

/// The current key plus any previous ones still needed for reading.
#[derive(Clone)]
pub struct SecretKeyring {
    current: KeyEntry,
    previous: Vec<KeyEntry>,
}

impl std::fmt::Debug for SecretKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKeyring")
            .field("current_key_id", &self.current.id)
            .field(
                "previous_key_ids",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn entry(raw: &[u8; 32]) -> KeyEntry {
    // The id is derived from the key so operators never have to name keys by hand.
    let digest = Sha256::new_with_prefix(b"tributary-secret-key-id:")
        .chain_update(raw)
        .finalize();
    KeyEntry {
        id: hex::encode(&digest[..8]),
        cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(raw)),
    }
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64.trim()).ok()?.try_into().ok()
}

impl SecretKeyring {
    pub fn new(current: [u8; 32], previous: &[[u8; 32]]) -> Self {
        SecretKeyring {
            current: entry(&current),
            previous: previous.iter().map(entry).collect(),
        }
    }

    pub fn from_base64(current: &str, previous: &[&str]) -> Result<Self, KeyError> {
        let current = decode_key(current).ok_or(KeyError::Current)?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(i, k)| decode_key(k).ok_or(KeyError::Previous(i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(current, &previous))
    }

    pub fn current_key_id(&self) -> &str {
        &self.current.id
    }

    pub fn encrypt(
        &self,
        secret: &SharedSecret,
        client_key: &str,
    ) -> Result<EncryptedSecret, KeyError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .current
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: client_key.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Encrypt)?;
        Ok(EncryptedSecret {
            key_id: self.current.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn decrypt(
        &self,
        stored: &EncryptedSecret,
        client_key: &str,
    ) -> Result<SharedSecret, KeyError> {
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == stored.key_id)
            .ok_or_else(|| KeyError::UnknownKeyId(stored.key_id.clone()))?;
        if stored.nonce.len() != 12 {
            return Err(KeyError::Decrypt);
        }
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(&stored.nonce),
                Payload {
                    msg: &stored.ciphertext,
                    aad: client_key.as_bytes(),
                },
            )
            .map_err(|_| KeyError::Decrypt)?;
        String::from_utf8(plain)
            .map(SharedSecret::new)
            .map_err(|_| KeyError::Decrypt)
    }

    /// True when `stored` was made with an older key and should be re-encrypted.
    pub fn needs_reencryption(&self, stored: &EncryptedSecret) -> bool {
        stored.key_id != self.current.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rotation() {
        let old = SecretKeyring::new([1; 32], &[]);
        let stored = old
            .encrypt(&SharedSecret::new("s3cret"), "tenant-a")
            .expect("encrypt");
        assert!(!stored.ciphertext.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(
            old.decrypt(&stored, "tenant-a").expect("decrypt").expose(),
            "s3cret"
        );

        let rotated = SecretKeyring::new([2; 32], &[[1; 32]]);
        assert!(rotated.needs_reencryption(&stored));
        assert_eq!(
            rotated
                .decrypt(&stored, "tenant-a")
                .expect("old key")
                .expose(),
            "s3cret"
        );

        let forgotten = SecretKeyring::new([2; 32], &[]);
        assert!(matches!(
            forgotten.decrypt(&stored, "tenant-a"),
            Err(KeyError::UnknownKeyId(_))
        ));
    }

    #[test]
    fn ciphertext_is_bound_to_its_tenant() {
        let ring = SecretKeyring::new([7; 32], &[]);
        let stored = ring
            .encrypt(&SharedSecret::new("s3cret"), "tenant-a")
            .expect("encrypt");
        assert_eq!(ring.decrypt(&stored, "tenant-b"), Err(KeyError::Decrypt));
    }

    #[test]
    fn base64_keys_must_be_32_bytes() {
        assert_eq!(
            SecretKeyring::from_base64("c2hvcnQ=", &[]).err(),
            Some(KeyError::Current)
        );
        let good = STANDARD.encode([3u8; 32]);
        assert_eq!(
            SecretKeyring::from_base64(&good, &["nope"]).err(),
            Some(KeyError::Previous(0))
        );
        assert!(SecretKeyring::from_base64(&good, &[&good]).is_ok());
    }
}
