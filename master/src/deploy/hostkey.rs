//! Host key verification against an OpenSSH `known_hosts` file.
//!
//! A matching key passes. An unknown host is refused unless `--accept-new`
//! was given, in which case its key is appended to the file. A key that
//! differs from the recorded one is always refused, with a loud message, as
//! OpenSSH does.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

/// Text every host-key-mismatch error starts with.
pub const MISMATCH_MARK: &str = "HOST KEY MISMATCH";

/// What the verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// The key was already recorded.
    Known,
    /// The host was unknown and its key was recorded (`--accept-new`).
    Added {
        /// SHA256 fingerprint of the accepted key.
        fingerprint: String,
    },
}

/// Settings shared by every host of one `deploy` invocation.
#[derive(Debug)]
pub struct KnownHostsFile {
    /// The `known_hosts` file.
    pub path: PathBuf,
    /// Record unknown hosts instead of refusing them.
    pub accept_new: bool,
    /// Serializes read-modify-write of the file between host threads.
    pub lock: Mutex<()>,
}

impl KnownHostsFile {
    /// A new handle on `path`.
    pub fn new(path: PathBuf, accept_new: bool) -> Self {
        Self {
            path,
            accept_new,
            lock: Mutex::new(()),
        }
    }

    /// Verifies the host key of the handshaken `session` to `address:port`.
    pub fn verify(&self, session: &Session, address: &str, port: u16) -> anyhow::Result<Verified> {
        let (key, _key_type) = session
            .host_key()
            .ok_or_else(|| anyhow!("the server sent no host key"))?;
        let fingerprint = fingerprint(session);
        let _guard = self
            .lock
            .lock()
            .map_err(|_| anyhow!("known_hosts lock poisoned"))?;
        let mut known = session.known_hosts().context("libssh2 known_hosts init")?;
        read_known_hosts(&mut known, &self.path)?;
        match known.check_port(address, port, key) {
            CheckResult::Match => Ok(Verified::Known),
            CheckResult::Mismatch => bail!(
                "HOST KEY MISMATCH — REMOTE HOST IDENTIFICATION HAS CHANGED for {}! \
                 The server offered {fingerprint}, which differs from the key recorded in {}. \
                 Someone could be eavesdropping (man-in-the-middle), or the host was reinstalled. \
                 Refusing to connect; if the change is expected, remove the old entry \
                 (ssh-keygen -R '{}' -f {}) and run again with --accept-new",
                display_host(address, port),
                self.path.display(),
                display_host(address, port),
                self.path.display()
            ),
            CheckResult::NotFound if !self.accept_new => bail!(
                "host key not verified: {} is not in {} (it offers {fingerprint}); \
                 check the fingerprint and run again with --accept-new to record it",
                display_host(address, port),
                self.path.display()
            ),
            CheckResult::NotFound => {
                append_known_host(&self.path, &display_host(address, port), key)?;
                Ok(Verified::Added { fingerprint })
            }
            CheckResult::Failure => bail!(
                "cannot check the host key of {} against {}",
                display_host(address, port),
                self.path.display()
            ),
        }
    }
}

/// Loads every line of `path` that libssh2 understands into `known`.
///
/// Lines libssh2 cannot parse (comments, markers such as `@cert-authority`,
/// key types it does not know) are skipped, as OpenSSH skips what it does not
/// use; a missing file is an empty one.
fn read_known_hosts(known: &mut ssh2::KnownHosts, path: &Path) -> anyhow::Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("{}: cannot read known_hosts", path.display()))
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        let _ = known.read_str(line, KnownHostFileKind::OpenSSH);
    }
    Ok(())
}

/// Appends one `host keytype base64key` line to `path`, leaving the rest of
/// the file untouched.
fn append_known_host(path: &Path, host: &str, key: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let key_type =
        key_type_name(key).ok_or_else(|| anyhow!("the server's host key blob is malformed"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let needs_newline = std::fs::read(path)
        .map(|bytes| !bytes.is_empty() && !bytes.ends_with(b"\n"))
        .unwrap_or(false);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open known_hosts for writing", path.display()))?;
    let line = format!(
        "{}{host} {key_type} {}\n",
        if needs_newline { "\n" } else { "" },
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    file.write_all(line.as_bytes())
        .with_context(|| format!("{}: cannot write known_hosts", path.display()))
}

/// The key type name at the start of an SSH public key blob
/// (`uint32 length || name || ...`).
fn key_type_name(key: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    let name = key.get(4..4usize.checked_add(len)?)?;
    std::str::from_utf8(name).ok().filter(|n| !n.is_empty())
}

/// The host as `known_hosts` names it: `addr` on port 22, `[addr]:port` otherwise.
pub fn display_host(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// OpenSSH-style fingerprint of the session's host key (`SHA256:...`).
pub fn fingerprint(session: &Session) -> String {
    match session.host_key_hash(HashType::Sha256) {
        Some(hash) => format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
        ),
        None => "an unknown key".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_type_from_blob() {
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(key_type_name(&blob), Some("ssh-ed25519"));
        assert_eq!(key_type_name(&[0, 0, 0, 40, 1]), None);
        assert_eq!(key_type_name(&[0, 0]), None);
    }

    #[test]
    fn host_names_follow_openssh() {
        assert_eq!(display_host("pi.local", 22), "pi.local");
        assert_eq!(display_host("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }
}
