//! The shared HMAC key that authenticates every record on the wire.
//!
//! The key is read from a file or an environment variable, never from the JSON
//! configuration (config files get copied around, committed and printed; key
//! files do not). [`resolve_key`] applies the fixed order of sources.
//!
//! # Key format
//!
//! A key file or variable holds either
//!
//! * **hex text** (what `openssl rand -hex 32 > hermes.key` writes): if the
//!   content, after trailing line endings are removed, consists only of an even
//!   number of hex digits, it is decoded from hex; or
//! * **raw bytes**: anything else is used as the key exactly as stored (minus
//!   trailing `\n` / `\r`).
//!
//! Either way the key must be at least [`MIN_KEY_BYTES`] bytes long after
//! decoding. Both ends read the key with the same rules, so a given file always
//! yields the same key on the master and on every worker.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Shortest key accepted, in bytes (after hex decoding). 16 bytes = 128 bits.
pub const MIN_KEY_BYTES: usize = 16;

/// Environment variable naming a file that holds the key.
pub const ENV_KEY_FILE: &str = "HERMES_HMAC_KEY_FILE";

/// Environment variable holding the key itself (hex or raw text).
pub const ENV_KEY: &str = "HERMES_HMAC_KEY";

/// Why a key could not be loaded.
#[derive(Error, Debug)]
pub enum AuthError {
    /// The key is shorter than [`MIN_KEY_BYTES`].
    #[error("HMAC key from {source_name} is {len} bytes; at least {min} bytes are required")]
    TooShort {
        /// Where the key came from (a path or an environment variable name).
        source_name: String,
        /// Length of the key after decoding.
        len: usize,
        /// The minimum, [`MIN_KEY_BYTES`].
        min: usize,
    },
    /// The key file could not be read.
    #[error("cannot read HMAC key file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// An environment variable holds bytes that are not valid Unicode.
    #[error("environment variable {var} is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: String,
    },
}

/// A secret key for HMAC-SHA256.
///
/// Its bytes are never printed (`Debug` shows only the length) and are
/// overwritten with zeros when the key is dropped.
#[derive(Clone)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    /// Uses `bytes` as the key as they are (no hex decoding).
    ///
    /// Fails with [`AuthError::TooShort`] below [`MIN_KEY_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, AuthError> {
        Self::checked(bytes.to_vec(), "bytes")
    }

    /// Reads the key from a file (hex text or raw bytes, see the module docs).
    ///
    /// On Unix a warning is logged when the file can be read by group or others.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, AuthError> {
        let path = path.as_ref();
        let content = std::fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        warn_if_shared(path);
        Self::checked(decode_key_text(content), &path.display().to_string())
    }

    /// Reads the key from environment variable `var` (hex text or raw text).
    ///
    /// Returns `Ok(None)` when the variable is unset or empty.
    pub fn from_env(var: &str) -> Result<Option<Self>, AuthError> {
        Self::from_env_value(var, std::env::var_os(var))
    }

    /// The key's bytes, for the MAC implementation.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key as lowercase hex text, what a key file holds (for shipping
    /// the run key to a worker; never log it).
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// Key length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a key has at least [`MIN_KEY_BYTES`] bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn from_env_value(var: &str, value: Option<OsString>) -> Result<Option<Self>, AuthError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let value = value.into_string().map_err(|_| AuthError::NotUnicode {
            var: var.to_string(),
        })?;
        if value.is_empty() {
            return Ok(None);
        }
        Self::checked(decode_key_text(value.into_bytes()), &format!("${var}")).map(Some)
    }

    fn checked(bytes: Vec<u8>, source_name: &str) -> Result<Self, AuthError> {
        // Wrap first so that a rejected key is zeroed on drop too.
        let key = HmacKey(bytes);
        if key.0.len() < MIN_KEY_BYTES {
            return Err(AuthError::TooShort {
                source_name: source_name.to_string(),
                len: key.0.len(),
                min: MIN_KEY_BYTES,
            });
        }
        Ok(key)
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey(<redacted, {} bytes>)", self.0.len())
    }
}

impl Drop for HmacKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites `bytes` with zeros in a way the optimizer does not remove.
fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Strips trailing line endings, then hex-decodes if the rest is hex text.
fn decode_key_text(mut content: Vec<u8>) -> Vec<u8> {
    while matches!(content.last(), Some(b'\n' | b'\r')) {
        content.pop();
    }
    let is_hex = !content.is_empty()
        && content.len().is_multiple_of(2)
        && content.iter().all(|b| b.is_ascii_hexdigit());
    if !is_hex {
        return content;
    }
    match hex::decode(&content) {
        Ok(decoded) => {
            wipe(&mut content);
            decoded
        }
        // Unreachable after the check above; keep the raw bytes rather than fail.
        Err(_) => content,
    }
}

#[cfg(unix)]
fn warn_if_shared(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                "HMAC key file is readable by group or others; consider chmod 600"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_shared(_path: &Path) {}

/// Finds the shared key, trying in order:
///
/// 1. `file`, the key file path from the configuration (the path only; the key
///    never sits in the JSON itself);
/// 2. the file named by `HERMES_HMAC_KEY_FILE`;
/// 3. the key in `HERMES_HMAC_KEY`.
///
/// The first source present wins (a present but broken source is an error, not
/// a fall-through). `Ok(None)` means no key is configured: records are sent
/// untagged and tagged records are rejected.
pub fn resolve_key(file: Option<&Path>) -> Result<Option<HmacKey>, AuthError> {
    resolve_key_with(file, |var| std::env::var_os(var))
}

/// [`resolve_key`] with the environment supplied by `env` (tests use a fake one
/// so that they never touch the process environment).
fn resolve_key_with(
    file: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<HmacKey>, AuthError> {
    if let Some(path) = file {
        return HmacKey::from_file(path).map(Some);
    }
    if let Some(path) = env(ENV_KEY_FILE).filter(|p| !p.is_empty()) {
        return HmacKey::from_file(PathBuf::from(path)).map(Some);
    }
    HmacKey::from_env_value(ENV_KEY, env(ENV_KEY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write;

    const HEX_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn fake_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |var| map.get(var).cloned()
    }

    fn key_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(content).expect("write key");
        f
    }

    #[test]
    fn from_bytes_rejects_short_keys() {
        assert!(matches!(
            HmacKey::from_bytes(&[7u8; 15]),
            Err(AuthError::TooShort {
                len: 15,
                min: 16,
                ..
            })
        ));
        assert_eq!(HmacKey::from_bytes(&[7u8; 16]).expect("16 bytes").len(), 16);
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let key = HmacKey::from_bytes(b"super-secret-key-material").expect("key");
        let shown = format!("{key:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("25 bytes"), "{shown}");
    }

    #[test]
    fn file_with_hex_and_newline_is_decoded() {
        let f = key_file(format!("{HEX_KEY}\n").as_bytes());
        let key = HmacKey::from_file(f.path()).expect("hex key");
        assert_eq!(
            key.as_bytes(),
            hex::decode(HEX_KEY).expect("hex").as_slice()
        );
    }

    #[test]
    fn file_with_raw_bytes_is_used_as_is() {
        let raw = b"not hex at all: \x00\xff\x10 raw key bytes";
        let f = key_file(&[&raw[..], b"\r\n"].concat());
        let key = HmacKey::from_file(f.path()).expect("raw key");
        assert_eq!(key.as_bytes(), raw);
    }

    #[test]
    fn short_file_and_missing_file_are_errors_naming_the_path() {
        let f = key_file(b"0011\n");
        let err = HmacKey::from_file(f.path()).expect_err("too short");
        assert!(matches!(err, AuthError::TooShort { len: 2, .. }));
        assert!(err.to_string().contains(&f.path().display().to_string()));

        let err = HmacKey::from_file("/nonexistent/hermes.key").expect_err("missing");
        assert!(matches!(err, AuthError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/hermes.key"));
    }

    #[test]
    fn from_env_unset_or_empty_is_none() {
        assert!(HmacKey::from_env("HERMES_TEST_AUTH_SURELY_UNSET_VAR")
            .expect("unset")
            .is_none());
        assert!(HmacKey::from_env_value("X", Some(OsString::new()))
            .expect("empty")
            .is_none());
        let key = HmacKey::from_env_value("X", Some(OsString::from(HEX_KEY)))
            .expect("hex")
            .expect("some");
        assert_eq!(key.len(), 32);
    }

    #[test]
    fn resolve_prefers_config_file_then_env_file_then_env_key() {
        let config_file = key_file(format!("{HEX_KEY}\n").as_bytes());
        let env_file = key_file(b"key-from-the-env-file-0123456789");
        let env = fake_env(&[
            (ENV_KEY_FILE, env_file.path().to_str().expect("utf8 path")),
            (ENV_KEY, "key-from-the-env-variable-012345"),
        ]);

        let key = resolve_key_with(Some(config_file.path()), &env).expect("ok");
        assert_eq!(key.expect("some").len(), 32);
        let key = resolve_key_with(None, &env).expect("ok").expect("some");
        assert_eq!(key.as_bytes(), b"key-from-the-env-file-0123456789");

        let env = fake_env(&[(ENV_KEY, "key-from-the-env-variable-012345")]);
        let key = resolve_key_with(None, &env).expect("ok").expect("some");
        assert_eq!(key.as_bytes(), b"key-from-the-env-variable-012345");

        assert!(resolve_key_with(None, fake_env(&[])).expect("ok").is_none());
    }

    #[test]
    fn resolve_reports_a_broken_source_instead_of_falling_through() {
        let env = fake_env(&[
            (ENV_KEY_FILE, "/nonexistent/hermes.key"),
            (ENV_KEY, "key-from-the-env-variable-012345"),
        ]);
        assert!(matches!(
            resolve_key_with(None, env),
            Err(AuthError::Read { .. })
        ));
    }
}
