//! Password hashing: argon2id only, with the `argon2` crate's default parameters
//! (v19, m = 19456 KiB, t = 2, p = 1) and a 16-byte salt from the OS. Owns the PHC
//! strings the store keeps and the strength rule; it must never log, return or keep a
//! password, and it does not know where hashes are stored.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::rngs::OsRng;
use rand::TryRngCore;

/// Fewest characters (Unicode scalar values) a password may have.
pub const MIN_CHARS: usize = 8;

/// Most bytes a password may have: more is a mistake or an attack on the hasher.
pub const MAX_BYTES: usize = 1024;

/// Bytes of salt, the PHC recommendation.
const SALT_BYTES: usize = 16;

/// A hash with the default parameters, verified against when the user does not exist
/// so that the answer takes as long as for a real user. Its password is not secret:
/// nothing is ever stored with this hash.
const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$cm9va2VyeS1kdW1teS0xNg$uRqBuDCSm5nHuXXzzCthUZqlORkb3pveMNthv21O/cc";

/// Why a password was refused or could not be hashed. Never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is too short: use at least {MIN_CHARS} characters")]
    TooShort,
    #[error("the password is too long: use at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("the password contains a NUL character")]
    Nul,
    #[error("could not hash the password: {0}")]
    Hashing(String),
}

/// Hashes `password` with argon2id and a fresh random salt; returns the PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`).
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt = random_salt()?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|phc| phc.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

fn random_salt() -> Result<SaltString, PasswordError> {
    let mut bytes = [0u8; SALT_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| PasswordError::Hashing(format!("the OS random source failed: {e}")))?;
    SaltString::encode_b64(&bytes).map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// True when `password` matches `phc`, an argon2id PHC string. Any other algorithm,
/// and a malformed string, never match.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    parsed.algorithm == argon2::ARGON2ID_IDENT
        && Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
}

/// Spends as long as [`verify`] against a real hash, and fails. Call it when the
/// user name is unknown, so that timing does not tell which names exist.
pub fn verify_dummy(password: &str) {
    let matched = verify(password, DUMMY_PHC);
    debug_assert!(!matched || password == "rookery: no such user");
}

/// Accepts a password for a new account or a change: at least [`MIN_CHARS`]
/// characters, at most [`MAX_BYTES`] bytes, and no NUL.
pub fn check_strength(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.contains('\0') {
        return Err(PasswordError::Nul);
    }
    if password.chars().count() < MIN_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_argon2id_with_default_parameters() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
    }

    #[test]
    fn verify_accepts_only_the_right_password() {
        let phc = hash("correct horse").unwrap();
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsE", &phc));
        assert!(!verify("", &phc));
    }

    #[test]
    fn two_hashes_of_one_password_differ() {
        let a = hash("same password").unwrap();
        let b = hash("same password").unwrap();
        assert_ne!(a, b, "salts must be random");
        assert!(verify("same password", &a) && verify("same password", &b));
    }

    #[test]
    fn malformed_or_other_algorithms_never_match() {
        assert!(!verify("x", "not a phc string"));
        assert!(!verify("x", ""));
        let phc = hash("password1").unwrap();
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        assert!(!verify("password1", &argon2i));
    }

    #[test]
    fn dummy_hash_uses_the_real_parameters() {
        // If `Argon2::default()` changes, the dummy must change with it, or unknown
        // names would answer faster or slower than known ones.
        let real = hash("whatever1").unwrap();
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(DUMMY_PHC), params(&real));
        assert!(verify("rookery: no such user", DUMMY_PHC));
        verify_dummy("guess");
    }

    #[test]
    fn strength_rules() {
        assert_eq!(check_strength("1234567"), Err(PasswordError::TooShort));
        assert_eq!(check_strength("12345678"), Ok(()));
        assert_eq!(check_strength("ééééééé"), Err(PasswordError::TooShort));
        assert_eq!(check_strength("éééééééé"), Ok(()), "characters, not bytes");
        assert_eq!(check_strength("1234\x005678"), Err(PasswordError::Nul));
        assert_eq!(check_strength(&"a".repeat(MAX_BYTES)), Ok(()));
        assert_eq!(
            check_strength(&"a".repeat(MAX_BYTES + 1)),
            Err(PasswordError::TooLong)
        );
    }
}
