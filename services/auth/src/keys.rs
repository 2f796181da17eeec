//! A department's Ed25519 root key: generated from the system's random source (ring), stored as
//! `ed25519-private/<hex>` text, published as `ed25519/<hex>`.

use std::str::FromStr;

pub use biscuit_auth::PublicKey;
use biscuit_auth::builder::Algorithm;
use biscuit_auth::{KeyPair, PrivateKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Error;

/// A department's root key pair. `Debug` never shows the private half.
pub struct RootKey(KeyPair);

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RootKey")
            .field(&self.public_string())
            .finish()
    }
}

impl RootKey {
    /// A new key from the system's random source.
    pub fn generate() -> Result<RootKey, Error> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| Error::Random)?;
        RootKey::from_seed(seed)
    }

    /// The key whose private half is `seed` (deterministic tests and fixtures).
    pub fn from_seed(seed: [u8; 32]) -> Result<RootKey, Error> {
        let private = PrivateKey::from_bytes(&seed, Algorithm::Ed25519)
            .map_err(|e| Error::InvalidKey(e.to_string()))?;
        Ok(RootKey(KeyPair::from(&private)))
    }

    /// Parses the text of a key file (`ed25519-private/<hex>`, surrounding white space allowed).
    pub fn parse(text: &str) -> Result<RootKey, Error> {
        let private =
            PrivateKey::from_str(text.trim()).map_err(|e| Error::InvalidKey(e.to_string()))?;
        Ok(RootKey(KeyPair::from(&private)))
    }

    /// The text of a key file.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", self.0.private().to_prefixed_string())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.0.public()
    }

    /// The public half as `ed25519/<hex>`, as published at `/.well-known/civitas`.
    pub fn public_string(&self) -> String {
        self.0.public().to_string()
    }

    pub(crate) fn key_pair(&self) -> &KeyPair {
        &self.0
    }
}

/// Parses a published public key (`ed25519/<hex>`).
pub fn parse_public(text: &str) -> Result<PublicKey, Error> {
    PublicKey::from_str(text.trim()).map_err(|e| Error::InvalidKey(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_file_text() {
        let key = RootKey::from_seed([1; 32]).expect("key");
        let again = RootKey::parse(&key.to_file_text()).expect("parses");
        assert_eq!(key.public_string(), again.public_string());
        assert!(key.public_string().starts_with("ed25519/"));
        assert_eq!(
            parse_public(&key.public_string()).expect("public"),
            key.public()
        );
        assert!(!format!("{key:?}").contains("private"));
        assert!(RootKey::parse("ed25519-private/zz").is_err());
        assert_ne!(
            RootKey::generate().expect("random").public_string(),
            key.public_string()
        );
    }
}
