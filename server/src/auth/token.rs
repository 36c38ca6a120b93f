//! Bearer secrets: access tokens (`rka_…`, from `POST /login`) and API keys (`rkk_…`,
//! from `rookery key create`). Owns their shape and their hash, the only form the
//! store ever sees; it must never log a secret nor look anything up.
//!
//! A secret is a prefix naming its kind and 32 bytes from the OS CSPRNG in base64url
//! without padding: 4 + 43 = 47 characters. With 256 random bits a plain SHA-256 is
//! enough to store it (no salt or slow hash needed: nothing to guess).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::TryRngCore;
use sha2::{Digest, Sha256};

use crate::store::TokenKind;

/// The prefix of access tokens.
pub const ACCESS_PREFIX: &str = "rka_";
/// The prefix of API keys.
pub const API_KEY_PREFIX: &str = "rkk_";

/// Random bytes in a secret.
const SECRET_BYTES: usize = 32;
/// Length of the base64url (no padding) text of [`SECRET_BYTES`] bytes.
const ENCODED_LEN: usize = (SECRET_BYTES * 8).div_ceil(6);
/// Length of a whole secret: prefix + text.
pub const SECRET_LEN: usize = ACCESS_PREFIX.len() + ENCODED_LEN;

/// A freshly made secret, to hand to its owner once, and its hash, to store.
pub struct NewToken {
    pub secret: String,
    pub hash: [u8; 32],
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("secret", &"<redacted>")
            .field("hash", &hex::encode(self.hash))
            .finish()
    }
}

/// The prefix for secrets of `kind`.
pub fn prefix(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => ACCESS_PREFIX,
        TokenKind::ApiKey => API_KEY_PREFIX,
    }
}

/// Makes a new secret of `kind` from 32 bytes of the OS CSPRNG.
///
/// # Panics
/// When the OS random source fails, which on supported systems it does not: handing
/// out a guessable secret instead would be worse.
pub fn generate(kind: TokenKind) -> NewToken {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the OS random source works");
    let secret = format!("{}{}", prefix(kind), URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&secret);
    NewToken { secret, hash }
}

/// SHA-256 of the secret's text: the store's key for it.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The kind of secret `s` has the shape of (prefix, length, alphabet), or `None`:
/// junk is refused before any store lookup.
pub fn kind_of(s: &str) -> Option<TokenKind> {
    if s.len() != SECRET_LEN {
        return None;
    }
    let (kind, body) = if let Some(body) = s.strip_prefix(ACCESS_PREFIX) {
        (TokenKind::Access, body)
    } else {
        (TokenKind::ApiKey, s.strip_prefix(API_KEY_PREFIX)?)
    };
    body.bytes().all(is_base64url).then_some(kind)
}

/// True when `s` has the shape of an access token or an API key.
pub fn looks_like_token(s: &str) -> bool {
    kind_of(s).is_some()
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_their_kind_and_shape() {
        let access = generate(TokenKind::Access);
        assert!(access.secret.starts_with("rka_"));
        assert_eq!(access.secret.len(), 47);
        assert_eq!(kind_of(&access.secret), Some(TokenKind::Access));
        let key = generate(TokenKind::ApiKey);
        assert!(key.secret.starts_with("rkk_"));
        assert_eq!(kind_of(&key.secret), Some(TokenKind::ApiKey));
        let raw = URL_SAFE_NO_PAD.decode(&key.secret[4..]).unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn the_stored_hash_is_sha256_of_the_secret() {
        let t = generate(TokenKind::Access);
        assert_eq!(t.hash, hash(&t.secret));
        // SHA-256("abc"), FIPS 180-2.
        assert_eq!(
            hex::encode(hash("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn secrets_do_not_repeat() {
        let a = generate(TokenKind::ApiKey);
        let b = generate(TokenKind::ApiKey);
        assert_ne!(a.secret, b.secret);
        assert_ne!(a.hash, b.hash);
    }

    #[test]
    fn junk_is_not_a_token() {
        let good = generate(TokenKind::Access).secret;
        assert!(looks_like_token(&good));
        assert!(!looks_like_token(""));
        assert!(!looks_like_token(&good[..46]), "too short");
        assert!(!looks_like_token(&format!("{good}A")), "too long");
        assert!(
            !looks_like_token(&good.replacen("rka_", "rkx_", 1)),
            "prefix"
        );
        let bad_char = format!("{}+{}", &good[..10], &good[11..]);
        assert!(!looks_like_token(&bad_char), "alphabet");
        let padded = format!("{}=", &good[..46]);
        assert!(!looks_like_token(&padded), "padding");
        let multibyte = format!("rka_é{}", "a".repeat(41));
        assert_eq!(multibyte.len(), 47);
        assert!(!looks_like_token(&multibyte));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = generate(TokenKind::ApiKey);
        let shown = format!("{t:?}");
        assert!(!shown.contains(&t.secret[4..]), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
