//! The fixed key tests and benchmarks encrypt tenant secrets with (never used for real).

use base64::Engine;
use tributary_common::crypto::SecretKeyring;

pub const TEST_SECRET_KEY: [u8; 32] = [42; 32];

/// A keyring holding [`TEST_SECRET_KEY`] only.
pub fn test_keyring() -> SecretKeyring {
    SecretKeyring::new(TEST_SECRET_KEY, &[])
}

/// The base64 form of [`TEST_SECRET_KEY`], for `TRIBUTARY_SECRET_KEY`.
pub fn test_secret_key_base64() -> String {
    base64::engine::general_purpose::STANDARD.encode(TEST_SECRET_KEY)
}
