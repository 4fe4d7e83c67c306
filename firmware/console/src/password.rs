//! The web console admin password, kept only as an argon2id PHC string.
//!
//! The parameters are the argon2 crate's defaults (19 MiB, 2 passes, 1 lane: OWASP's
//! recommendation for argon2id); they are written into the PHC string, so a later change of
//! defaults still verifies old hashes.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// A password hash could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// An argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str) -> Result<PasswordHashString, HashError> {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let hash = hasher()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| HashError(e.to_string()))?;
        Ok(PasswordHashString(hash.to_string()))
    }

    /// A stored hash (from `console.admin_password_hash`); `None` if it is not an argon2id
    /// PHC string.
    pub fn from_stored(stored: &str) -> Option<PasswordHashString> {
        let parsed = PasswordHash::new(stored).ok()?;
        (parsed.algorithm == Algorithm::Argon2id.ident())
            .then(|| PasswordHashString(stored.to_string()))
    }

    /// Whether `password` is the one this hash was made from.
    pub fn verify(&self, password: &str) -> bool {
        PasswordHash::new(&self.0).is_ok_and(|parsed| {
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    }

    /// The PHC string, as stored in `console.admin_password_hash`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Never print the hash by accident (it is an offline-guessing target).
impl std::fmt::Debug for PasswordHashString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHashString(..)")
    }
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_an_argon2id_phc_string_that_verifies_only_its_password() {
        let hash = PasswordHashString::new("correct horse battery").unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(!hash.as_str().contains("correct horse"));
        assert!(hash.verify("correct horse battery"));
        assert!(!hash.verify("correct horse batterY"));
        assert!(!format!("{hash:?}").contains("argon2"));
        let stored = PasswordHashString::from_stored(hash.as_str()).unwrap();
        assert!(stored.verify("correct horse battery"));
        assert!(
            PasswordHashString::from_stored("$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaA")
                .is_none()
        );
        assert!(PasswordHashString::from_stored("plain text").is_none());
    }

    #[test]
    fn the_same_password_gets_a_different_salt_each_time() {
        let a = PasswordHashString::new("0123456789").unwrap();
        let b = PasswordHashString::new("0123456789").unwrap();
        assert_ne!(a, b);
        assert!(a.verify("0123456789") && b.verify("0123456789"));
    }
}
