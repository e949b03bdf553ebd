//! [`EncryptedSecret`]: a tenant's secret encrypted under the operator's [`SecretKey`]
//! with XChaCha20-Poly1305, bound to the tenant's id.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{Tag, XNonce};
use zeroize::Zeroizing;

use super::{Password, SecretKey, fill_random};
use crate::Error;

/// Length of the XChaCha20 nonce. 192 bits is large enough that random nonces never
/// collide in practice, which is why XChaCha is used rather than plain ChaCha20 (whose
/// 96-bit nonces are unsafe to pick at random for many messages under one key).
const NONCE_LEN: usize = 24;

/// Length of the Poly1305 authentication tag appended to each ciphertext.
const TAG_LEN: usize = 16;

/// Version prefix of [`EncryptedSecret`]'s text form, so the format can change later
/// without guessing what an old row holds.
const V1_PREFIX: &str = "v1:";

impl SecretKey {
    /// Encrypts a tenant's secret for storage in that tenant's registry row.
    ///
    /// Each call uses a fresh random nonce, so encrypting the same password twice gives
    /// different texts. `tenant` is authenticated but not encrypted: decrypting with any
    /// other tenant id fails, which stops a ciphertext copied between rows from being
    /// accepted.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes (a broken system).
    #[must_use]
    pub fn encrypt(&self, plain: &Password, tenant: &str) -> EncryptedSecret {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);

        // Layout: nonce || ciphertext || tag, encrypted in place after the nonce. The
        // buffer holds the plain text until then (and on the unreachable failure), so it
        // is wiped when dropped.
        let plain = plain.expose().as_bytes();
        let mut payload = Zeroizing::new(Vec::with_capacity(NONCE_LEN + plain.len() + TAG_LEN));
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(plain);
        // Fails only for messages of 256 GiB and more (ChaCha20's 32-bit block counter),
        // which a password can never be.
        let Ok(tag) = self.cipher().encrypt_inout_detached(
            &XNonce::from(nonce),
            tenant.as_bytes(),
            (&mut payload[NONCE_LEN..]).into(),
        ) else {
            unreachable!("XChaCha20-Poly1305 message of 256 GiB or more")
        };
        payload.extend_from_slice(&tag);

        EncryptedSecret(format!("{V1_PREFIX}{}", BASE64.encode(&*payload)))
    }

    /// Decrypts a secret that [`SecretKey::encrypt`] produced for `tenant`.
    ///
    /// # Errors
    ///
    /// [`Error::Decrypt`] naming `tenant` if the secret was encrypted with another key or
    /// for another tenant, or has been altered.
    pub fn decrypt(&self, secret: &EncryptedSecret, tenant: &str) -> crate::Result<Password> {
        let fail = || Error::Decrypt { tenant: tenant.to_owned() };
        // `EncryptedSecret` is only built by `encrypt` and `parse`, which both guarantee
        // this shape; the checks stay so a future constructor cannot make this panic.
        // Decrypted in place, so the buffer holds the plain text afterwards: wiped on drop.
        let mut payload = Zeroizing::new(secret.payload().ok_or_else(fail)?);
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(fail());
        }
        let (nonce, rest) = payload.split_at_mut(NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(&*nonce).map_err(|_| fail())?;
        let tag = Tag::try_from(&*tag).map_err(|_| fail())?;
        self.cipher()
            .decrypt_inout_detached(&nonce, tenant.as_bytes(), (&mut *body).into(), &tag)
            .map_err(|_| fail())?;
        // Only `encrypt` output authenticates, and that was made from a `&str`, so this
        // cannot fail short of a forged ciphertext, which authentication already rejects.
        let text = std::str::from_utf8(body).map_err(|_| fail())?;
        Ok(Password::copy_of(text))
    }
}

/// A secret encrypted by [`SecretKey::encrypt`], in its storable text form.
///
/// The text is `v1:` followed by base64 of nonce (24 bytes), ciphertext and tag
/// (16 bytes); the version prefix lets a later format coexist with this one. Serde
/// (de)serializes it as that plain string, so it fits in a JSON column; deserializing
/// checks the shape, so a corrupt value is caught when the row is read.
///
/// The ciphertext is not secret, but `Debug` still omits it: it is long, meaningless to a
/// reader, and logging it invites offline guessing.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EncryptedSecret(String);

impl EncryptedSecret {
    /// Accepts text produced by [`EncryptedSecret::as_str`] (for example read back from
    /// the database); `None` if it is not of that shape. Whether it decrypts is only known
    /// at [`SecretKey::decrypt`].
    #[must_use]
    pub fn parse(text: &str) -> Option<EncryptedSecret> {
        Self::checked(text.to_owned())
    }

    /// [`EncryptedSecret::parse`] for an owned string, without copying it.
    fn checked(text: String) -> Option<EncryptedSecret> {
        let secret = EncryptedSecret(text);
        let payload = secret.payload()?;
        (payload.len() >= NONCE_LEN + TAG_LEN).then_some(secret)
    }

    /// The storable text, `v1:` followed by base64.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The decoded nonce, ciphertext and tag, or `None` if the text is malformed.
    fn payload(&self) -> Option<Vec<u8>> {
        let encoded = self.0.strip_prefix(V1_PREFIX)?;
        BASE64.decode(encoded).ok()
    }
}

impl fmt::Debug for EncryptedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptedSecret(v1:…)")
    }
}

impl TryFrom<String> for EncryptedSecret {
    type Error = &'static str;

    /// Used by `Deserialize`; the message ends up in the deserializer's error.
    fn try_from(text: String) -> Result<Self, Self::Error> {
        EncryptedSecret::checked(text).ok_or(
            "not an encrypted secret: expected `v1:` followed by base64 of nonce, \
             ciphertext and tag",
        )
    }
}

impl From<EncryptedSecret> for String {
    /// Used by `Serialize`.
    fn from(secret: EncryptedSecret) -> Self {
        secret.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_decrypt_round_trip() {
        let key = SecretKey::generate();
        for plain in ["s3cret", "", "pässwörd with spaces and ünïcode ✓"] {
            let secret = key.encrypt(&Password::new(plain), "acme");
            assert!(secret.as_str().starts_with("v1:"));
            let back = key.decrypt(&secret, "acme").unwrap();
            assert_eq!(back.expose(), plain);
        }
    }

    #[test]
    fn encryption_uses_fresh_nonces() {
        let key = SecretKey::generate();
        let password = Password::new("same");
        assert_ne!(key.encrypt(&password, "acme"), key.encrypt(&password, "acme"));
    }

    #[test]
    fn wrong_key_fails() {
        let secret = SecretKey::generate().encrypt(&Password::new("s3cret"), "acme");
        let error = SecretKey::generate().decrypt(&secret, "acme").unwrap_err();
        assert!(matches!(&error, Error::Decrypt { tenant } if tenant == "acme"), "{error:?}");
        assert!(error.to_string().contains("'acme'"));
    }

    #[test]
    fn wrong_tenant_fails() {
        let key = SecretKey::generate();
        let secret = key.encrypt(&Password::new("s3cret"), "acme");
        let error = key.decrypt(&secret, "globex").unwrap_err();
        assert!(matches!(&error, Error::Decrypt { tenant } if tenant == "globex"), "{error:?}");
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let key = SecretKey::generate();
        let secret = key.encrypt(&Password::new("s3cret"), "acme");
        let mut payload = secret.payload().unwrap();
        for index in [0, NONCE_LEN, payload.len() - 1] {
            payload[index] ^= 1;
            let tampered = EncryptedSecret::parse(&format!("v1:{}", BASE64.encode(&payload))).unwrap();
            assert!(matches!(key.decrypt(&tampered, "acme"), Err(Error::Decrypt { .. })));
            payload[index] ^= 1;
        }
        // Truncated to a shape that still parses, but without the last tag byte.
        let short = EncryptedSecret::parse(&format!("v1:{}", BASE64.encode(&payload[..payload.len() - 1])));
        assert!(matches!(key.decrypt(&short.unwrap(), "acme"), Err(Error::Decrypt { .. })));
    }

    #[test]
    fn parse_checks_shape() {
        let key = SecretKey::generate();
        let secret = key.encrypt(&Password::new("x"), "acme");
        assert_eq!(EncryptedSecret::parse(secret.as_str()), Some(secret.clone()));
        assert_eq!(EncryptedSecret::parse(""), None);
        assert_eq!(EncryptedSecret::parse("v1:"), None);
        assert_eq!(EncryptedSecret::parse("v1:not base64!"), None);
        assert_eq!(EncryptedSecret::parse(&format!("v1:{}", BASE64.encode([0u8; 39]))), None);
        assert_eq!(EncryptedSecret::parse(&format!("v2:{}", &secret.as_str()[3..])), None);
    }

    #[test]
    fn serde_is_the_plain_text_form() {
        let key = SecretKey::generate();
        let secret = key.encrypt(&Password::new("s3cret"), "acme");
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, format!("\"{}\"", secret.as_str()));
        let back: EncryptedSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(key.decrypt(&back, "acme").unwrap().expose(), "s3cret");
        assert!(serde_json::from_str::<EncryptedSecret>("\"garbage\"").is_err());
    }

    #[test]
    fn debug_and_display_are_redacted() {
        let password = Password::new("hunter2-plain");
        assert_eq!(format!("{password:?}"), "********");
        assert_eq!(format!("{password}"), "********");
        assert_eq!(format!("{:?}", Some(password.clone())), "Some(********)");

        let key = SecretKey::from_base64(&BASE64.encode([7u8; 32]), "test").unwrap();
        let debug = format!("{key:?}");
        assert!(!debug.contains(&BASE64.encode([7u8; 32])) && !debug.contains('7'), "{debug}");

        let secret = key.encrypt(&password, "acme");
        let debug = format!("{secret:?}");
        assert_eq!(debug, "EncryptedSecret(v1:…)");
        assert!(!debug.contains("hunter2"));
        assert!(!secret.as_str().contains("hunter2"));
    }
}
