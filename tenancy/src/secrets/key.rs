//! The operator's secret key: where it comes from (the environment, a key file, or a key
//! file generated on first use) and the key itself.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use secrecy::{ExposeSecret as _, SecretBox};
use subtle::ConstantTimeEq as _;
use zeroize::{Zeroize as _, Zeroizing};

use super::fill_random;
use crate::Error;

/// The environment variable holding the secret key itself (base64 of 32 bytes).
///
/// Public so that command-line front ends can name it in their help text.
pub const KEY_ENV: &str = "TENANCY_SECRET_KEY";

/// The environment variable holding the path of a file with the secret key.
///
/// Public so that command-line front ends can name it in their help text.
pub const KEY_FILE_ENV: &str = "TENANCY_SECRET_KEY_FILE";

/// Length of the secret key in bytes (XChaCha20-Poly1305 uses a 256-bit key).
const KEY_LEN: usize = 32;

/// The hint appended to every "this is not a key" message, telling the operator how to
/// make a valid one.
const KEY_HINT: &str = "expected 32 bytes in base64, e.g. from `openssl rand -base64 32`";

/// Key files are tiny (45 bytes); reading stops after this many so that pointing
/// `TENANCY_SECRET_KEY_FILE` at a huge file or a device cannot hang or exhaust memory.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// Where [`SecretKey::load_or_create`] found the key.
///
/// Returned so that the caller can tell the operator, in particular when a new key file
/// was generated: that file must be backed up, since the stored tenant passwords cannot
/// be decrypted without it. This crate never prints, so reporting it is the caller's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The key came from the `TENANCY_SECRET_KEY` environment variable.
    Env,
    /// The key was read from this existing file (named by `TENANCY_SECRET_KEY_FILE`, or
    /// the default key file).
    File(PathBuf),
    /// No key was configured and the default key file did not exist, so a new random key
    /// was generated and written to this file (mode `0600`).
    Generated(PathBuf),
}

/// The operator's 256-bit key that encrypts tenant secrets at rest.
///
/// `Debug` is redacted and the bytes, kept in a [`SecretBox`], are zeroed on drop (best
/// effort). There is no way to read the key back out: it only encrypts and decrypts
/// ([`SecretKey::encrypt`], [`SecretKey::decrypt`]).
pub struct SecretKey(SecretBox<[u8; KEY_LEN]>);

impl SecretKey {
    /// Finds the secret key, creating one if none is configured.
    ///
    /// In order:
    /// 1. the environment variable `TENANCY_SECRET_KEY`: the key as base64 of 32 bytes;
    /// 2. the environment variable `TENANCY_SECRET_KEY_FILE`: the path of a file holding
    ///    the key as base64 (surrounding whitespace ignored); the file must exist;
    /// 3. `default_key_file`: read like the above if it exists; otherwise a new random key
    ///    is written to it (created with mode `0600`, parent directories with `0700`).
    ///
    /// A variable that is set but unusable is an error rather than a reason to fall
    /// through to the next source: silently using a different key would encrypt new
    /// secrets with it and make the old ones undecryptable.
    ///
    /// # Errors
    ///
    /// [`Error::SecretKey`] naming the variable or file when the key is missing,
    /// unreadable or not base64 of 32 bytes; [`Error::Io`] when a new key file cannot be
    /// created or written.
    pub fn load_or_create(default_key_file: &Path) -> crate::Result<(SecretKey, KeySource)> {
        let env_key = match std::env::var(KEY_ENV) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(key_error(KEY_ENV, format!("it is not valid UTF-8; {KEY_HINT}")));
            }
        };
        let env_file = std::env::var_os(KEY_FILE_ENV).map(PathBuf::from);
        resolve(env_key, env_file, default_key_file)
    }

    /// Parses a key given as standard base64 (with padding) of exactly 32 bytes;
    /// surrounding whitespace is ignored.
    ///
    /// `location` names where the text came from (an environment variable or a file)
    /// and goes into the error message.
    ///
    /// # Errors
    ///
    /// [`Error::SecretKey`] if the text is not base64 or does not decode to 32 bytes.
    pub fn from_base64(text: &str, location: &str) -> crate::Result<SecretKey> {
        let text = text.trim();
        if text.is_empty() {
            return Err(key_error(location, format!("it is empty; {KEY_HINT}")));
        }
        // The decoder's own message is left out: it would quote a character of the key.
        let Ok(bytes) = BASE64.decode(text).map(Zeroizing::new) else {
            return Err(key_error(location, format!("it is not valid base64; {KEY_HINT}")));
        };
        if bytes.len() != KEY_LEN {
            return Err(key_error(location, format!("it decodes to {} bytes; {KEY_HINT}", bytes.len())));
        }
        Ok(SecretKey(SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| key.copy_from_slice(&bytes))))
    }

    /// A new random key from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide random bytes (a broken system).
    #[must_use]
    pub fn generate() -> SecretKey {
        SecretKey(SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| fill_random(key)))
    }

    /// [`SecretKey::generate`] without the panic, for callers that have an error to
    /// report it through.
    fn try_generate() -> Result<SecretKey, getrandom::Error> {
        let mut filled = Ok(());
        let key = SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| filled = getrandom::fill(key));
        filled.map(|()| SecretKey(key))
    }

    /// The AEAD instance for this key. Cheap to build (it just copies the key), so it is
    /// not kept around as a second copy of the key material.
    pub(super) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.0.expose_secret()))
    }

    /// Reads a key file: base64 text, surrounding whitespace ignored. `None` if the file
    /// does not exist, which only the default key file may get away with.
    fn read_file(path: &Path) -> crate::Result<Option<SecretKey>> {
        let location = path.display().to_string();
        let text = match read_key_text(path) {
            Ok(KeyText::Text(text)) => text,
            Ok(KeyText::TooLarge) => {
                return Err(key_error(&location, format!("the file is larger than a key file can be; {KEY_HINT}")));
            }
            Ok(KeyText::NotUtf8) => {
                return Err(key_error(&location, format!("the file does not hold text; {KEY_HINT}")));
            }
            // Judged by the cause rather than by calling `exists()` first: between such a
            // check and the read, the file could appear or vanish.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(key_error(&location, format!("cannot read the file: {error}")));
            }
        };
        SecretKey::from_base64(&text, &location).map(Some)
    }

    /// [`SecretKey::read_file`] for a file that must exist.
    fn read_existing_file(path: &Path) -> crate::Result<SecretKey> {
        Self::read_file(path)?
            .ok_or_else(|| key_error(&path.display().to_string(), "the file does not exist".to_owned()))
    }

    /// Creates `path` holding a new random key, or reads it if another process created it
    /// first.
    fn create_file(path: &Path) -> crate::Result<(SecretKey, KeySource)> {
        let io_error = |source| Error::Io { path: path.to_owned(), source };

        // A key file in a directory that does not exist yet (say, a fresh config
        // directory) should not stop the first run; 0700 since it holds a secret.
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| Error::Io { path: parent.to_owned(), source })?;
        }

        let key = SecretKey::try_generate().map_err(|error| {
            key_error(
                &path.display().to_string(),
                format!("cannot generate a key: the system's random number generator failed: {error}"),
            )
        })?;
        // The key is written to a private temporary file in the same folder first and
        // then moved into place without replacing anything (`persist_noclobber`: a
        // no-replace rename or a hard link), so two processes starting at once cannot both
        // install a key (the loser reads the winner's instead of overwriting it, which
        // would orphan secrets already encrypted with the first key), and no reader ever
        // sees a half-written file. The temporary file is removed on every failure.
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut text = Zeroizing::new(BASE64.encode(key.0.expose_secret()));
        text.push('\n');
        let mut temporary = tempfile::Builder::new()
            .prefix(&format!(".{file_name}."))
            .suffix(".tmp")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(parent.unwrap_or(Path::new(".")))
            .map_err(io_error)?;
        temporary.write_all(text.as_bytes()).and_then(|()| temporary.as_file().sync_all()).map_err(io_error)?;
        match temporary.persist_noclobber(path) {
            Ok(_) => Ok((key, KeySource::Generated(path.to_owned()))),
            Err(error) if error.error.kind() == io::ErrorKind::AlreadyExists => {
                Self::read_existing_file(path).map(|key| (key, KeySource::File(path.to_owned())))
            }
            Err(error) => Err(io_error(error.error)),
        }
    }

    /// A key of the given bytes, for tests that need a known key.
    #[cfg(test)]
    pub(super) fn from_bytes(bytes: [u8; KEY_LEN]) -> SecretKey {
        SecretKey(SecretBox::new(Box::new(bytes)))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(********)")
    }
}

/// Compares in constant time, so that comparing keys (say, to check that a reloaded key
/// is the one in use) does not leak how many leading bytes match.
impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose_secret()[..].ct_eq(&other.0.expose_secret()[..]).into()
    }
}

impl Eq for SecretKey {}

/// The key resolution of [`SecretKey::load_or_create`], with the environment passed in so
/// tests can exercise it without touching the process environment (which other tests
/// running in parallel would see).
fn resolve(
    env_key: Option<String>,
    env_file: Option<PathBuf>,
    default_file: &Path,
) -> crate::Result<(SecretKey, KeySource)> {
    if let Some(text) = env_key.map(Zeroizing::new) {
        return SecretKey::from_base64(&text, KEY_ENV).map(|key| (key, KeySource::Env));
    }
    if let Some(path) = env_file {
        if path.as_os_str().is_empty() {
            return Err(key_error(
                KEY_FILE_ENV,
                "it is set but empty; expected the path of a file holding the key".to_owned(),
            ));
        }
        return SecretKey::read_existing_file(&path).map(|key| (key, KeySource::File(path)));
    }
    match SecretKey::read_file(default_file)? {
        Some(key) => Ok((key, KeySource::File(default_file.to_owned()))),
        None => SecretKey::create_file(default_file),
    }
}

/// What a key file turned out to hold.
enum KeyText {
    /// Its text (not yet trimmed or decoded), wiped when dropped.
    Text(Zeroizing<String>),
    /// More than [`MAX_KEY_FILE_LEN`] bytes: certainly not a key file.
    TooLarge,
    /// Bytes that are not UTF-8, so not base64 either.
    NotUtf8,
}

/// Reads at most [`MAX_KEY_FILE_LEN`] + 1 bytes of a key file.
fn read_key_text(path: &Path) -> io::Result<KeyText> {
    let mut bytes = Zeroizing::new(Vec::new());
    fs::File::open(path)?.take(MAX_KEY_FILE_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_KEY_FILE_LEN {
        return Ok(KeyText::TooLarge);
    }
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(KeyText::Text(Zeroizing::new(text))),
        Err(error) => {
            error.into_bytes().zeroize();
            Ok(KeyText::NotUtf8)
        }
    }
}

/// Builds [`Error::SecretKey`].
fn key_error(location: &str, reason: String) -> Error {
    Error::SecretKey { location: location.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Password;

    /// A fresh directory under the system temp dir, removed again on drop (also when the
    /// test fails), so tests cannot see each other's files.
    struct TempDir(tempfile::TempDir);

    impl TempDir {
        fn new(name: &str) -> Self {
            TempDir(tempfile::Builder::new().prefix(&format!("tenancy-secret-{name}-")).tempdir().unwrap())
        }

        fn path(&self) -> &Path {
            self.0.path()
        }
    }

    fn key_message(error: Error) -> (String, String) {
        match error {
            Error::SecretKey { location, reason } => (location, reason),
            other => panic!("expected Error::SecretKey, got {other:?}"),
        }
    }

    #[test]
    fn base64_errors_name_location_and_hint() {
        let (location, reason) = key_message(SecretKey::from_base64("not*base64", KEY_ENV).unwrap_err());
        assert_eq!(location, "TENANCY_SECRET_KEY");
        assert!(reason.contains("not valid base64"), "{reason}");
        assert!(reason.contains("expected 32 bytes in base64, e.g. from `openssl rand -base64 32`"));

        let sixteen = BASE64.encode([1u8; 16]);
        let error = SecretKey::from_base64(&sixteen, KEY_ENV).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("TENANCY_SECRET_KEY"), "{message}");
        assert!(message.contains("decodes to 16 bytes"), "{message}");
        assert!(message.contains("`openssl rand -base64 32`"), "{message}");

        let (_, reason) = key_message(SecretKey::from_base64(" \n", KEY_ENV).unwrap_err());
        assert!(reason.contains("empty"), "{reason}");

        // Surrounding whitespace, as `openssl rand -base64 32 > file` leaves it, is fine.
        let text = format!("  {}\n", BASE64.encode([9u8; 32]));
        assert_eq!(SecretKey::from_base64(&text, "x").unwrap(), SecretKey::from_bytes([9; 32]));
    }

    #[test]
    fn env_key_wins() {
        let dir = TempDir::new("env-key");
        let default = dir.path().join("secret.key");
        let (key, source) =
            resolve(Some(BASE64.encode([3u8; 32])), Some(dir.path().join("ignored")), &default).unwrap();
        assert_eq!(key, SecretKey::from_bytes([3; 32]));
        assert_eq!(source, KeySource::Env);
        assert!(!default.exists(), "no key file may be created when the env key is set");

        // A bad env key is an error, never a fall-through to the files.
        let (location, _) = key_message(resolve(Some("short".into()), None, &default).unwrap_err());
        assert_eq!(location, "TENANCY_SECRET_KEY");
        assert!(!default.exists());
    }

    #[test]
    fn env_file_is_read_and_must_exist() {
        let dir = TempDir::new("env-file");
        let default = dir.path().join("secret.key");
        let file = dir.path().join("operator.key");
        fs::write(&file, format!("\n {}  \n", BASE64.encode([5u8; 32]))).unwrap();

        let (key, source) = resolve(None, Some(file.clone()), &default).unwrap();
        assert_eq!(key, SecretKey::from_bytes([5; 32]));
        assert_eq!(source, KeySource::File(file.clone()));
        assert!(!default.exists());

        let missing = dir.path().join("missing.key");
        let (location, reason) = key_message(resolve(None, Some(missing.clone()), &default).unwrap_err());
        assert_eq!(location, missing.display().to_string());
        assert!(reason.contains("does not exist"), "{reason}");
        assert!(!default.exists(), "a missing TENANCY_SECRET_KEY_FILE must not fall back");

        fs::write(&file, "garbled!").unwrap();
        let error = resolve(None, Some(file.clone()), &default).unwrap_err();
        assert!(error.to_string().contains(&file.display().to_string()), "{error}");
        assert!(error.to_string().contains("not valid base64"), "{error}");

        fs::write(&file, [0xff, 0xfe]).unwrap();
        let (_, reason) = key_message(resolve(None, Some(file.clone()), &default).unwrap_err());
        assert!(reason.contains("does not hold text"), "{reason}");

        let (_, reason) = key_message(resolve(None, Some(dir.path().to_owned()), &default).unwrap_err());
        assert!(reason.contains("cannot read the file"), "{reason}");

        let (location, _) = key_message(resolve(None, Some(PathBuf::new()), &default).unwrap_err());
        assert_eq!(location, "TENANCY_SECRET_KEY_FILE");
    }

    #[test]
    fn default_file_is_generated_0600_and_reloaded() {
        let dir = TempDir::new("generate");
        let default = dir.path().join("nested").join("secret.key");

        let (key, source) = resolve(None, None, &default).unwrap();
        assert_eq!(source, KeySource::Generated(default.clone()));
        let mode = fs::metadata(&default).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let text = fs::read_to_string(&default).unwrap();
        assert!(text.ends_with('\n') && text.trim().len() == 44, "{text:?}");

        let (again, source) = resolve(None, None, &default).unwrap();
        assert_eq!(source, KeySource::File(default.clone()));
        assert_eq!(again, key);

        // And what one encrypts, the reloaded key decrypts.
        let secret = key.encrypt(&Password::new("s3cret"), "acme");
        assert_eq!(again.decrypt(&secret, "acme").unwrap().expose(), "s3cret");
    }

    #[test]
    fn garbled_default_file_is_an_error_not_replaced() {
        let dir = TempDir::new("garbled");
        let default = dir.path().join("secret.key");
        fs::write(&default, "").unwrap();
        let (location, reason) = key_message(resolve(None, None, &default).unwrap_err());
        assert_eq!(location, default.display().to_string());
        assert!(reason.contains("empty"), "{reason}");
        assert_eq!(fs::read_to_string(&default).unwrap(), "", "must not be overwritten");

        fs::write(&default, vec![b'A'; 4096]).unwrap();
        let (_, reason) = key_message(resolve(None, None, &default).unwrap_err());
        assert!(reason.contains("larger"), "{reason}");
    }

    #[test]
    fn concurrent_creation_yields_one_key() {
        let dir = TempDir::new("race");
        let default = dir.path().join("secret.key");
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| resolve(None, None, &default))).collect();
            handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        let generated = results.iter().filter(|(_, s)| matches!(s, KeySource::Generated(_))).count();
        assert_eq!(generated, 1);
        assert!(results.iter().all(|(key, _)| *key == results[0].0));
    }
}
