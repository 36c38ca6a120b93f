//! RSA secure login (`CMD_keyReq` + `CMD_secLogin`, qap1.md §8.3), the login RSclient
//! uses. The server's key is loaded once from the config (never generated per
//! connection). `CMD_keyReq` hands out a fresh 256-byte nonce (the "authkey") and the
//! public key; the client returns RSA-OAEP (SHA-1) blocks of
//! `len | authkey | len | "user\npassword"`, which must carry the nonce this
//! connection was given. Owns the key and the byte layouts, not the login policy.

use std::path::Path;

use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Oaep, RsaPrivateKey};

/// Length of the nonce in a key block.
pub const AUTHKEY_LEN: usize = 256;

/// The server's login key.
pub struct LoginKey {
    key: RsaPrivateKey,
    public_der: Vec<u8>,
}

impl std::fmt::Debug for LoginKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginKey")
            .field("bits", &(self.block_len() * 8))
            .finish_non_exhaustive()
    }
}

impl LoginKey {
    /// Reads a PEM private key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 `PRIVATE KEY`).
    pub fn load(path: &Path) -> Result<LoginKey, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = RsaPrivateKey::from_pkcs1_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(&pem))
            .map_err(|e| format!("{}: not an RSA private key in PEM: {e}", path.display()))?;
        LoginKey::new(key)
    }

    pub fn new(key: RsaPrivateKey) -> Result<LoginKey, String> {
        let public_der = key
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| format!("cannot encode the public key: {e}"))?
            .as_bytes()
            .to_vec();
        Ok(LoginKey { key, public_der })
    }

    fn block_len(&self) -> usize {
        rsa::traits::PublicKeyParts::size(&self.key)
    }

    /// The raw `CMD_keyReq` answer: `u32 256 | authkey | u32 N | N bytes of DER
    /// PKCS#1 RSAPublicKey`.
    pub fn key_block(&self, authkey: &[u8; AUTHKEY_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + AUTHKEY_LEN + self.public_der.len());
        out.extend_from_slice(&(AUTHKEY_LEN as u32).to_le_bytes());
        out.extend_from_slice(authkey);
        out.extend_from_slice(&(self.public_der.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.public_der);
        out
    }

    /// Decrypts a `CMD_secLogin` payload and returns `(user, password)` if it carries
    /// `authkey`. Every failure is the same error: nothing is learnt from it.
    pub fn open(&self, ciphertext: &[u8], authkey: &[u8; AUTHKEY_LEN]) -> Option<(String, String)> {
        let block = self.block_len();
        if ciphertext.is_empty() || ciphertext.len() % block != 0 || ciphertext.len() > 16 * block {
            return None;
        }
        let mut plain = Vec::new();
        for chunk in ciphertext.chunks(block) {
            plain.extend(self.key.decrypt(Oaep::new::<sha1::Sha1>(), chunk).ok()?);
        }
        let (nonce, rest) = take_field(&plain)?;
        if nonce != authkey.as_slice() {
            return None;
        }
        let (credentials, _) = take_field(rest)?;
        let text = String::from_utf8_lossy(credentials);
        let (user, password) = text.split_once('\n')?;
        let password = password.split(['\n', '\r']).next().unwrap_or("");
        Some((user.to_owned(), password.to_owned()))
    }
}

/// `u32 LE length | bytes`, checked against what is there.
fn take_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let body = bytes.get(4..4usize.checked_add(len)?)?;
    Some((body, &bytes[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPublicKey;

    fn seal(key: &LoginKey, plain: &[u8]) -> Vec<u8> {
        let der = &key.key_block(&[0; AUTHKEY_LEN])[8 + AUTHKEY_LEN..];
        let public = <RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(der).unwrap();
        let chunk = key.block_len() - 42;
        plain
            .chunks(chunk)
            .flat_map(|c| {
                public
                    .encrypt(&mut rand08(), Oaep::new::<sha1::Sha1>(), c)
                    .unwrap()
            })
            .collect()
    }

    fn rand08() -> rsa::rand_core::OsRng {
        rsa::rand_core::OsRng
    }

    fn message(authkey: &[u8], creds: &[u8]) -> Vec<u8> {
        let mut m = (authkey.len() as u32).to_le_bytes().to_vec();
        m.extend_from_slice(authkey);
        m.extend_from_slice(&(creds.len() as u32).to_le_bytes());
        m.extend_from_slice(creds);
        m
    }

    #[test]
    fn a_sealed_login_opens_only_with_its_nonce() {
        let key = LoginKey::new(RsaPrivateKey::new(&mut rand08(), 1024).unwrap()).unwrap();
        let nonce = [7u8; AUTHKEY_LEN];
        let block = key.key_block(&nonce);
        assert_eq!(&block[..4], &256u32.to_le_bytes());
        assert_eq!(&block[4..260], &nonce[..]);
        let sealed = seal(&key, &message(&nonce, b"alice\nsecret pw\n"));
        assert_eq!(
            key.open(&sealed, &nonce),
            Some(("alice".into(), "secret pw".into()))
        );
        assert_eq!(
            key.open(&sealed, &[8u8; AUTHKEY_LEN]),
            None,
            "another nonce"
        );
        assert_eq!(key.open(&sealed[..sealed.len() - 1], &nonce), None, "cut");
        let mut flipped = sealed.clone();
        flipped[10] ^= 1;
        assert_eq!(key.open(&flipped, &nonce), None, "tampered");
        assert_eq!(key.open(&[], &nonce), None);
    }
}
