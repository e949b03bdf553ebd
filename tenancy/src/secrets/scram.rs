//! SCRAM-SHA-256 verifiers, the form in which PostgreSQL stores a role's password.
//!
//! Written here rather than taken from a crate: the SCRAM crates implement the exchange
//! (client or server side), not the building of a stored verifier with a chosen iteration
//! count, which is all this needs, on top of the `pbkdf2`, `hmac` and `sha2` crates.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit as _, Mac};
use sha2::{Digest, Sha256};
use zeroize::Zeroize as _;

use super::{Password, fill_random};

/// PostgreSQL's default `scram_iterations`, so our verifiers look like the server's own.
const SCRAM_ITERATIONS: u32 = 4096;

/// Salt length PostgreSQL uses for SCRAM verifiers (`SCRAM_DEFAULT_SALT_LEN`).
const SCRAM_SALT_LEN: usize = 16;

/// The SCRAM iteration count for passwords [`Password::generate`] made: 256 random bits
/// cannot be guessed whatever the count, so key stretching buys nothing, while every new
/// connection of a tenant pool runs the PBKDF2 rounds on the client (4,096 take a few
/// milliseconds per login).
const GENERATED_PASSWORD_SCRAM_ITERATIONS: u32 = 64;

/// A PostgreSQL SCRAM-SHA-256 verifier for a password [`Password::generate`] made, in
/// the form PostgreSQL stores in `pg_authid.rolpassword`:
/// `SCRAM-SHA-256$64:<salt>$<StoredKey>:<ServerKey>` (base64, random 16-byte salt).
///
/// Passing this to `CREATE ROLE … PASSWORD '…'` (or `ALTER ROLE`) sets the password
/// without the plain text ever reaching the server, its logs or `pg_stat_statements`.
///
/// # Panics
///
/// If the operating system cannot provide random bytes for the salt (a broken system).
#[must_use]
pub(crate) fn scram_sha256_verifier_of_generated(password: &Password) -> String {
    let mut salt = [0u8; SCRAM_SALT_LEN];
    fill_random(&mut salt);
    scram_sha256_verifier_with_salt(password, &salt, GENERATED_PASSWORD_SCRAM_ITERATIONS)
}

/// The SCRAM-SHA-256 verifier of a human-chosen `password`, with PostgreSQL's default
/// 4,096 iterations (passwords that [`Password::generate`] made get fewer: stretching
/// 256 random bits buys nothing): `SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>`
/// (base64, random 16-byte salt).
///
/// Passing this to `CREATE ROLE … PASSWORD '…'` (or `ALTER ROLE`) sets the password
/// without the plain text ever reaching the server, its logs or `pg_stat_statements`.
///
/// # Panics
///
/// If the operating system cannot provide random bytes for the salt (a broken system).
pub fn scram_sha256_verifier(password: &Password) -> String {
    let mut salt = [0u8; SCRAM_SALT_LEN];
    fill_random(&mut salt);
    scram_sha256_verifier_with_salt(password, &salt, SCRAM_ITERATIONS)
}

/// [`scram_sha256_verifier`] with a given salt and iteration count, so tests can compare
/// against a fixed vector.
///
/// Computed as PostgreSQL's `scram_build_secret` does (RFC 5802 and RFC 7677):
/// `SaltedPassword = PBKDF2-HMAC-SHA-256(Normalize(password), salt, iterations)`,
/// `ClientKey = HMAC(SaltedPassword, "Client Key")`, `StoredKey = SHA-256(ClientKey)`,
/// `ServerKey = HMAC(SaltedPassword, "Server Key")`.
pub(crate) fn scram_sha256_verifier_with_salt(password: &Password, salt: &[u8], iterations: u32) -> String {
    // Normalize = SASLprep, as both ends do: PostgreSQL when checking, sqlx (with this
    // same `stringprep` crate) when logging in. ASCII passwords pass through unchanged.
    // Where SASLprep rejects a password (prohibited characters such as ASCII control
    // characters), PostgreSQL falls back to the raw bytes, so we do the same.
    let normalized = stringprep::saslprep(password.expose()).unwrap_or(Cow::Borrowed(password.expose()));

    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(normalized.as_bytes(), salt, iterations, &mut salted);
    if let Cow::Owned(mut normalized) = normalized {
        normalized.zeroize();
    }

    // SaltedPassword and ClientKey are what a client needs to log in: wiped after use.
    // StoredKey and ServerKey are what the server stores anyway.
    let mut client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    salted.zeroize();
    client_key.zeroize();

    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key),
    )
}

/// HMAC-SHA-256 of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length (long ones are hashed, short ones padded), so
    // `new_from_slice` cannot fail for it; the `Result` is only there for other MACs.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { unreachable!("HMAC accepts keys of any length") };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 section 3's example exchange (user "user", password "pencil"), checked
    /// as the server checks a login against a stored verifier: the ClientProof the RFC's
    /// client sent must prove knowledge of the key whose hash is our StoredKey, and our
    /// ServerKey must produce the ServerSignature the RFC's server sent.
    #[test]
    fn scram_verifier_checks_the_rfc_7677_exchange() {
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = scram_sha256_verifier_with_salt(&Password::new("pencil"), &salt, 4096);
        let rest = verifier.strip_prefix("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$").unwrap();
        let (stored_key, server_key) = rest.split_once(':').unwrap();
        let (stored_key, server_key) = (BASE64.decode(stored_key).unwrap(), BASE64.decode(server_key).unwrap());

        // client-first-message-bare, server-first-message, client-final-message-without-proof.
        let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                            r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                            c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let client_proof = BASE64.decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=").unwrap();
        let server_signature = BASE64.decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();

        // ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) = StoredKey.
        let client_signature = hmac_sha256(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = client_proof.iter().zip(client_signature).map(|(p, s)| p ^ s).collect();
        assert_eq!(Sha256::digest(&client_key).as_slice(), stored_key.as_slice());
        assert_eq!(hmac_sha256(&server_key, auth_message.as_bytes()).as_slice(), server_signature.as_slice());
    }

    #[test]
    fn scram_matches_independent_vector() {
        // Expected value computed independently with Python's standard library:
        //   python3 -c 'import hashlib,hmac,base64
        //   salt=b"0123456789abcdef"
        //   sp=hashlib.pbkdf2_hmac("sha256",b"pencil",salt,4096)
        //   ck=hmac.new(sp,b"Client Key","sha256").digest()
        //   st=hashlib.sha256(ck).digest()
        //   sk=hmac.new(sp,b"Server Key","sha256").digest()
        //   e=lambda b:base64.b64encode(b).decode()
        //   print(f"SCRAM-SHA-256$4096:{e(salt)}${e(st)}:{e(sk)}")'
        let expected = "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$\
                        nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:\
                        jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20=";
        let actual = scram_sha256_verifier_with_salt(&Password::new("pencil"), b"0123456789abcdef", 4096);
        assert_eq!(actual, expected);
    }

    #[test]
    fn generated_passwords_are_long_random_and_cheap_to_log_in_with() {
        let (a, b) = (Password::generate(), Password::generate());
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a.expose(), b.expose());
        let verifier = scram_sha256_verifier_of_generated(&a);
        assert!(verifier.starts_with("SCRAM-SHA-256$64:"), "{verifier}");
        assert!(!verifier.contains(a.expose()));
        assert!(scram_sha256_verifier(&a).starts_with("SCRAM-SHA-256$4096:"));
    }

    #[test]
    fn scram_applies_saslprep() {
        let salt = b"0123456789abcdef";
        // SASLprep maps U+00A0 (no-break space) to a plain space, as PostgreSQL does.
        assert_eq!(
            scram_sha256_verifier_with_salt(&Password::new("a\u{a0}b"), salt, 4096),
            scram_sha256_verifier_with_salt(&Password::new("a b"), salt, 4096),
        );
        // A password SASLprep rejects (here for its ASCII control character, BEL) is used
        // as-is, like PostgreSQL does, rather than failing. Expected value from the Python
        // snippet in `scram_matches_independent_vector` with password b"a\x07b" and 1
        // iteration.
        assert_eq!(
            scram_sha256_verifier_with_salt(&Password::new("a\u{7}b"), salt, 1),
            "SCRAM-SHA-256$1:MDEyMzQ1Njc4OWFiY2RlZg==$\
             VlDSs5q9kpUSgndKWAAgIOK7DajjWRsYXW8M2RRV9kk=:\
             c91LrAfujUsyMmZJlmc/TX8CDSUnmbL1W6F/e43UBDw=",
        );
    }

    #[test]
    fn scram_verifier_shape_and_random_salt() {
        let password = Password::new("pencil");
        let first = scram_sha256_verifier(&password);
        let second = scram_sha256_verifier(&password);
        assert_ne!(first, second, "salts must differ");
        let rest = first.strip_prefix("SCRAM-SHA-256$4096:").unwrap();
        let (salt, keys) = rest.split_once('$').unwrap();
        let (stored, server) = keys.split_once(':').unwrap();
        assert_eq!(BASE64.decode(salt).unwrap().len(), 16);
        assert_eq!(BASE64.decode(stored).unwrap().len(), 32);
        assert_eq!(BASE64.decode(server).unwrap().len(), 32);
    }
}
