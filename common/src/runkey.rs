//! Which keys a node signs and verifies with: secure by default.
//!
//! In order:
//!
//! 1. a key named by the configuration (`kafka.hmac_key_file`) or the
//!    environment (`HERMES_HMAC_KEY_FILE`, `HERMES_HMAC_KEY`), see
//!    [`crate::auth::resolve_key`];
//! 2. otherwise the run key in [`DEFAULT_KEY_FILE`]: the master creates it
//!    (32 random bytes as hex, mode 0600) when it does not exist,
//!    `master deploy` copies it to the workers, and a worker on the master's
//!    machine reads the same file;
//! 3. no key at all only with `kafka.insecure: true`, an explicit choice
//!    logged as a warning (records then carry a CRC, which finds corruption
//!    but not forgery).
//!
//! `kafka.hmac_previous_key_file` names the key being rotated out: it still
//! verifies, never signs (see [`crate::envelope::EnvelopeCodec::with_previous_key`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::TryRngCore;
use thiserror::Error;

use crate::auth::{resolve_key, AuthError, HmacKey};
use crate::config::KafkaConfig;

/// The run key's file when none is configured, relative to the working
/// directory (the repository root for `cargo run`).
pub const DEFAULT_KEY_FILE: &str = "data/hermes.key";

/// Bytes of a generated key.
pub const GENERATED_KEY_BYTES: usize = 32;

/// The keys a node uses.
#[derive(Clone, Debug, Default)]
pub struct RunKeys {
    /// Signs every record and verifies; `None` only with `kafka.insecure`.
    pub current: Option<HmacKey>,
    /// Verifies only (a key rotation in progress).
    pub previous: Option<HmacKey>,
    /// Where `current` came from, for logs (`None` without a key).
    pub source: Option<String>,
}

/// Why a node has no usable key.
#[derive(Debug, Error)]
pub enum RunKeyError {
    /// No key is configured and the default run key file does not exist.
    #[error(
        "no run key: {path} does not exist (the master creates it at start and `master deploy` \
         copies it to workers; or set `kafka.hmac_key_file`, or `kafka.insecure: true` to run \
         without authentication)"
    )]
    Missing {
        /// The default key file that was looked for.
        path: PathBuf,
    },
    /// `kafka.insecure` is set and a key is configured too.
    #[error(
        "kafka.insecure is true but a key is configured ({source_name}): remove one of the two"
    )]
    Contradiction {
        /// Where the key came from.
        source_name: String,
    },
    /// A key could not be read.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The default key file could not be created.
    #[error("cannot create the run key {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Whether a node may create the default key file when it is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenMissing {
    /// Create it (the master).
    Create,
    /// Fail with [`RunKeyError::Missing`] (workers, which may wait and retry).
    Fail,
}

/// Resolves the keys of `cfg` (see the module docs), with the default key
/// file at `default_file`.
pub fn resolve(
    cfg: &KafkaConfig,
    default_file: &Path,
    missing: WhenMissing,
) -> Result<RunKeys, RunKeyError> {
    let configured = resolve_key(cfg.hmac_key_file.as_deref())?;
    let source = match (&configured, &cfg.hmac_key_file) {
        (Some(_), Some(path)) => Some(path.display().to_string()),
        (Some(_), None) => Some("the HERMES_HMAC_KEY(_FILE) environment".to_string()),
        (None, _) => None,
    };
    let previous = cfg
        .hmac_previous_key_file
        .as_deref()
        .map(HmacKey::from_file)
        .transpose()?;
    if cfg.insecure {
        if let Some(source_name) = source {
            return Err(RunKeyError::Contradiction { source_name });
        }
        return Ok(RunKeys::default());
    }
    if let Some(current) = configured {
        return Ok(RunKeys {
            current: Some(current),
            previous,
            source,
        });
    }
    let current = match HmacKey::from_file(default_file) {
        Ok(key) => key,
        Err(AuthError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            match missing {
                WhenMissing::Fail => {
                    return Err(RunKeyError::Missing {
                        path: default_file.to_path_buf(),
                    })
                }
                WhenMissing::Create => create_key_file(default_file)?,
            }
        }
        Err(e) => return Err(e.into()),
    };
    Ok(RunKeys {
        current: Some(current),
        previous,
        source: Some(default_file.display().to_string()),
    })
}

/// [`resolve`] for a worker: while the default key file is missing (the
/// master has not started yet on this machine), waits for it up to
/// `timeout`, saying once what it waits for.
pub async fn wait_for(
    cfg: &KafkaConfig,
    default_file: &Path,
    timeout: std::time::Duration,
) -> Result<RunKeys, RunKeyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut said = false;
    loop {
        match resolve(cfg, default_file, WhenMissing::Fail) {
            Err(RunKeyError::Missing { path }) if tokio::time::Instant::now() < deadline => {
                if !said {
                    tracing::warn!(
                        path = %path.display(),
                        timeout_secs = timeout.as_secs(),
                        "waiting for the run key (the master creates it; `master deploy` copies it)"
                    );
                    said = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

/// Logs which keys are in use; an unauthenticated run is a warning.
pub fn log_choice(keys: &RunKeys) {
    match (&keys.current, &keys.source) {
        (Some(_), source) => tracing::info!(
            key = source.as_deref().unwrap_or("?"),
            rotating = keys.previous.is_some(),
            "records are authenticated (HMAC-SHA256)"
        ),
        (None, _) => tracing::warn!(
            "kafka.insecure: records are NOT authenticated (CRC only); anyone who can write \
             to the topics can forge them"
        ),
    }
}

/// Writes a new random key to `path` (hex, mode 0600, parent folders made),
/// or reads the one another process created first.
pub fn create_key_file(path: &Path) -> Result<HmacKey, RunKeyError> {
    let err = |source| RunKeyError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut bytes = [0u8; GENERATED_KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| err(std::io::Error::other(e.to_string())))?;
    let text = hex::encode(bytes);
    bytes.fill(0);
    // Written under a temporary name with mode 0600, then linked into place:
    // a reader never sees a half-written key, and of two creators one wins.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created a new run key (mode 0600)");
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    Ok(HmacKey::from_file(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KafkaConfig {
        KafkaConfig::default()
    }

    #[test]
    fn the_master_creates_a_private_key_that_workers_then_read() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("data").join("hermes.key");
        let err = resolve(&cfg(), &path, WhenMissing::Fail).expect_err("missing");
        assert!(matches!(err, RunKeyError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("kafka.insecure"), "{err}");
        let master = resolve(&cfg(), &path, WhenMissing::Create).expect("created");
        let worker = resolve(&cfg(), &path, WhenMissing::Fail).expect("read");
        let (m, w) = (master.current.expect("key"), worker.current.expect("key"));
        assert_eq!(m.as_bytes(), w.as_bytes());
        assert_eq!(m.len(), GENERATED_KEY_BYTES);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Nothing temporary is left beside it.
        let names: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn insecure_means_no_key_and_refuses_a_configured_one() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("hermes.key");
        let insecure = KafkaConfig {
            insecure: true,
            ..cfg()
        };
        let keys = resolve(&insecure, &path, WhenMissing::Create).expect("insecure");
        assert!(keys.current.is_none());
        assert!(!path.exists(), "no key file is made for an insecure run");
        std::fs::write(&path, "00112233445566778899aabbccddeeff").expect("write");
        let both = KafkaConfig {
            hmac_key_file: Some(path.clone()),
            ..insecure
        };
        let err = resolve(&both, &path, WhenMissing::Create).expect_err("contradiction");
        assert!(matches!(err, RunKeyError::Contradiction { .. }), "{err}");
    }

    #[test]
    fn a_configured_key_and_a_previous_one_are_used() {
        let dir = tempfile::tempdir().expect("dir");
        let (new, old) = (dir.path().join("new.key"), dir.path().join("old.key"));
        std::fs::write(&new, "00112233445566778899aabbccddeeff").expect("write");
        std::fs::write(&old, "ffeeddccbbaa99887766554433221100").expect("write");
        let c = KafkaConfig {
            hmac_key_file: Some(new.clone()),
            hmac_previous_key_file: Some(old),
            ..cfg()
        };
        let keys = resolve(&c, &dir.path().join("unused"), WhenMissing::Create).expect("keys");
        assert!(keys.current.is_some() && keys.previous.is_some());
        assert_eq!(
            keys.source.as_deref(),
            Some(new.display().to_string().as_str())
        );
        assert!(!dir.path().join("unused").exists());
    }
}
