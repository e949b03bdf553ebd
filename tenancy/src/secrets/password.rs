//! [`Password`]: a plain-text secret that does not print and is wiped when dropped.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret as _, SecretString};
use zeroize::{Zeroize as _, Zeroizing};

use super::fill_random;

/// A secret string, such as a tenant's database password.
///
/// Its `Debug` and `Display` print `********`, and it does not implement `Serialize`, so
/// it cannot end up in logs, error messages or JSON by accident. [`Password::expose`] is
/// the only way to read it, which makes every place that does easy to find.
///
/// The text lives in a [`SecretString`], which overwrites it with zeros when dropped
/// (best effort: copies made before it was wrapped, or by the code that reads it, are not
/// covered).
#[derive(Clone)]
pub struct Password(SecretString);

impl Password {
    /// Wraps a secret string.
    ///
    /// The string is copied into an allocation of exactly its length and the original
    /// buffer, spare capacity included, is wiped: handing the `String` itself to
    /// [`SecretString`] would shrink it by reallocating, leaving the old buffer unwiped.
    pub fn new(secret: impl Into<String>) -> Self {
        let secret = Zeroizing::new(secret.into());
        Self::copy_of(&secret)
    }

    /// Wraps a copy of `secret`; wiping the original is the caller's job.
    pub(super) fn copy_of(secret: &str) -> Self {
        Self(SecretString::from(secret))
    }

    /// A new random password: 32 bytes from the operating system's random number
    /// generator, base64url-encoded (43 characters, no padding).
    ///
    /// # Panics
    /// If the operating system cannot provide random bytes (see the key generation).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        fill_random(&mut bytes);
        let password = Self::new(URL_SAFE_NO_PAD.encode(bytes));
        bytes.zeroize();
        password
    }

    /// The secret itself. Call this only where the plain text is really needed (building
    /// a connection, hashing, encrypting).
    #[must_use]
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("********")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_keeps_the_text_exactly() {
        // A buffer with spare capacity, as `read_line` and `String::with_capacity` leave.
        let mut text = String::with_capacity(64);
        text.push_str("pässwörd ✓");
        let password = Password::new(text);
        assert_eq!(password.expose(), "pässwörd ✓");
        assert_eq!(password.clone().expose(), "pässwörd ✓");
        assert_eq!(Password::new("").expose(), "");
    }
}
