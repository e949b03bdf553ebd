//! Secrets: tenant database passwords, the operator's secret key that encrypts them at
//! rest, and the SCRAM verifiers PostgreSQL stores for tenant roles.
//!
//! The registry keeps each tenant's database password so the framework can connect as
//! that tenant later. It is stored encrypted ([`EncryptedSecret`]) with XChaCha20-Poly1305
//! under a key only the operator holds ([`SecretKey`]), so a dump of the master database
//! alone does not reveal any tenant's credentials. The tenant id is bound to each
//! ciphertext as associated data, so copying one tenant's secret into another tenant's row
//! makes it fail to decrypt instead of silently handing out the wrong credentials.
//!
//! Plain-text passwords travel as [`Password`], whose `Debug` and `Display` are redacted,
//! so a stray `{:?}` in a log line or an error message cannot leak one.
//!
//! Memory holding a secret (passwords, the key, key file text, decrypted bytes) is wiped
//! with [`zeroize`] when it is dropped, and secrets are compared in constant time with
//! [`subtle`]; both best effort, as copies made by code outside this module (a connection
//! URL, a driver's buffers) are out of reach.
//!
//! One file per job:
//! - `password.rs`: [`Password`], the redacted, wiped plain-text secret;
//! - `key.rs`: [`SecretKey`] and where it comes from ([`KeySource`]: the environment, a
//!   key file, or a newly generated key file);
//! - `encrypted.rs`: [`EncryptedSecret`], a secret encrypted under the key for one tenant;
//! - `scram.rs`: the SCRAM-SHA-256 verifiers given to PostgreSQL instead of plain
//!   passwords.
//!
//! This module never prints: when [`SecretKey::load_or_create`] generates a new key file,
//! it says so through [`KeySource::Generated`] and the caller decides how to tell the
//! operator.

mod encrypted;
mod key;
mod password;
mod scram;

pub use encrypted::EncryptedSecret;
pub use key::{KEY_ENV, KEY_FILE_ENV, KeySource, SecretKey};
pub use password::Password;
pub use scram::scram_sha256_verifier;
pub(crate) use scram::scram_sha256_verifier_of_generated;

/// Fills `buf` from the operating system's random number generator.
///
/// # Panics
///
/// If the operating system cannot provide random bytes. On the platforms this crate
/// supports that only happens on a broken system, where continuing without randomness
/// (reusing nonces, predictable keys) would be worse than stopping.
fn fill_random(buf: &mut [u8]) {
    if let Err(error) = getrandom::fill(buf) {
        panic!("the operating system's random number generator failed: {error}");
    }
}
