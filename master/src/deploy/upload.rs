//! Checksum-aware, atomic file upload over SFTP.
//!
//! A file is skipped when the remote copy's SHA-256 already matches (computed
//! remotely with `sha256sum`, or by reading the file back over SFTP where that
//! tool is missing). Otherwise it is written to a temporary name in the same
//! directory and renamed over the target, so a reader never sees half a file
//! and a running binary is never overwritten in place.
//!
//! Where the host has `gzip`, files of [`COMPRESS_FROM`] bytes or more
//! travel gzip-compressed (compressed once, shared by all hosts) and are
//! unpacked on the host into the temporary name; the unpacked file's
//! checksum is checked before it is moved into place.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use sha2::{Digest, Sha256};

use super::session::{quote_path, Remote};

/// Size of one SFTP write.
const CHUNK: usize = 64 * 1024;
/// Files this large or larger are sent compressed where the host can unpack them.
pub const COMPRESS_FROM: usize = 64 * 1024;

/// A local file's content and checksum, read once and shared by all hosts.
#[derive(Debug)]
pub struct LocalFile {
    /// The bytes.
    pub content: Vec<u8>,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    /// The gzip form, made the first time a host takes it.
    gzip: std::sync::OnceLock<Vec<u8>>,
}

impl LocalFile {
    /// Wraps `content`.
    pub fn from_bytes(content: Vec<u8>) -> Self {
        let sha256 = hex::encode(Sha256::digest(&content));
        Self {
            content,
            sha256,
            gzip: std::sync::OnceLock::new(),
        }
    }

    /// The content gzip-compressed (computed once).
    pub fn gzipped(&self) -> &[u8] {
        self.gzip.get_or_init(|| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing to a Vec cannot fail.
            let _ = enc.write_all(&self.content);
            enc.finish().unwrap_or_default()
        })
    }

    /// Reads the local file `path` (`what` names it in errors).
    pub fn read(path: &Path, what: &str) -> anyhow::Result<Self> {
        let content = std::fs::read(path)
            .with_context(|| format!("cannot read the {what} {}", path.display()))?;
        Ok(Self::from_bytes(content))
    }
}

/// One file to place on the host.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Short label for progress messages ("worker", "config", ...).
    pub label: &'static str,
    /// The content.
    pub local: Arc<LocalFile>,
    /// Absolute destination path on the host.
    pub remote: PathBuf,
    /// Permission bits of the destination.
    pub mode: i32,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The remote copy already had the same checksum.
    Unchanged,
    /// The file was uploaded.
    Uploaded {
        /// Its size.
        bytes: u64,
        /// Bytes that crossed the link (less when compressed).
        sent: u64,
    },
}

/// Whether the host can unpack gzip (`gzip` on its PATH).
pub fn remote_has_gzip(remote: &Remote) -> bool {
    remote
        .exec("command -v gzip >/dev/null 2>&1 && echo yes")
        .map(|o| o.success() && o.stdout.trim() == "yes")
        .unwrap_or(false)
}

/// Makes the remote copy of `spec` match; `progress` gets bytes written so
/// far; `gzip`: the host can unpack gzip (see [`remote_has_gzip`]).
pub fn sync_file(
    remote: &Remote,
    sftp: &ssh2::Sftp,
    spec: &FileSpec,
    gzip: bool,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<Outcome> {
    if remote_sha256(remote, sftp, &spec.remote)?.as_deref() == Some(spec.local.sha256.as_str()) {
        // Keep the mode right even when the content is unchanged.
        remote.exec_ok(&format!(
            "chmod {:o} {}",
            spec.mode,
            quote_path(&spec.remote)
        ))?;
        return Ok(Outcome::Unchanged);
    }
    let tmp = temp_name(&spec.remote);
    let packed = gzip && spec.local.content.len() >= COMPRESS_FROM;
    let sent = if packed {
        let gz = tmp.with_file_name(format!(
            "{}.gz",
            tmp.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let bytes = spec.local.gzipped();
        if let Err(e) = write_file(sftp, &gz, bytes, 0o600, progress) {
            let e = explain_write_error(remote, &spec.remote, e);
            let _ = sftp.unlink(&gz);
            return Err(e);
        }
        let unpack = format!(
            "gzip -dc {gz} > {tmp} && rm -f {gz} && chmod {mode:o} {tmp}",
            gz = quote_path(&gz),
            tmp = quote_path(&tmp),
            mode = spec.mode
        );
        if let Err(e) = remote.exec_ok(&unpack) {
            let _ = sftp.unlink(&gz);
            let _ = sftp.unlink(&tmp);
            return Err(explain_write_error(
                remote,
                &spec.remote,
                e.context("unpacking the gzip upload failed"),
            ));
        }
        if let Some(got) = remote_sha256(remote, sftp, &tmp)? {
            if got != spec.local.sha256 {
                let _ = sftp.unlink(&tmp);
                bail!(
                    "{} unpacked with SHA-256 {got}, expected {}",
                    spec.remote.display(),
                    spec.local.sha256
                );
            }
        }
        bytes.len() as u64
    } else {
        if let Err(e) = write_file(sftp, &tmp, &spec.local.content, spec.mode, progress) {
            // Measure free space while the partial file still fills the disk.
            let e = explain_write_error(remote, &spec.remote, e);
            let _ = sftp.unlink(&tmp);
            return Err(e);
        }
        spec.local.content.len() as u64
    };
    let rename = format!("mv -f {} {}", quote_path(&tmp), quote_path(&spec.remote));
    if let Err(e) = remote.exec_ok(&rename) {
        let _ = sftp.unlink(&tmp);
        return Err(e.context(format!("cannot move {} into place", spec.remote.display())));
    }
    Ok(Outcome::Uploaded {
        bytes: spec.local.content.len() as u64,
        sent,
    })
}

/// `<dir>/.<name>.tmp-<pid>`: hidden, in the destination directory (same filesystem).
fn temp_name(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    target.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

fn write_file(
    sftp: &ssh2::Sftp,
    path: &Path,
    content: &[u8],
    mode: i32,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<()> {
    let mut file = sftp
        .open_mode(
            path,
            ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
            mode,
            ssh2::OpenType::File,
        )
        .map_err(|e| anyhow!("cannot create {}: {e}", path.display()))?;
    let mut written = 0u64;
    for chunk in content.chunks(CHUNK) {
        file.write_all(chunk)
            .map_err(|e| anyhow!("SFTP write to {} failed: {e}", path.display()))?;
        written += chunk.len() as u64;
        progress(written);
    }
    file.fsync().ok();
    file.close()
        .map_err(|e| anyhow!("SFTP close of {} failed: {e}", path.display()))?;
    // The create mode is filtered by the remote umask; set it exactly.
    sftp.setstat(
        path,
        ssh2::FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode as u32),
            atime: None,
            mtime: None,
        },
    )
    .map_err(|e| anyhow!("cannot chmod {}: {e}", path.display()))?;
    Ok(())
}

/// Adds what `df` says when a write failed because the disk is full.
fn explain_write_error(remote: &Remote, target: &Path, e: anyhow::Error) -> anyhow::Error {
    let dir = target.parent().unwrap_or(Path::new("/"));
    let df = remote
        .exec(&format!("df -Pk {} | tail -n 1", quote_path(dir)))
        .ok()
        .filter(|o| o.success())
        .map(|o| o.stdout);
    match df.as_deref().and_then(available_kib) {
        Some(avail) if avail < 1024 => e.context(format!(
            "remote disk full: {avail} KiB left on the filesystem of {} (df)",
            dir.display()
        )),
        Some(avail) => e.context(format!(
            "upload of {} failed ({avail} KiB free there)",
            target.display()
        )),
        None => e.context(format!("upload of {} failed", target.display())),
    }
}

/// The "Available" column of one `df -Pk` line.
fn available_kib(line: &str) -> Option<u64> {
    line.split_whitespace().nth(3)?.parse().ok()
}

/// SHA-256 of the remote file, `None` when it does not exist.
fn remote_sha256(
    remote: &Remote,
    sftp: &ssh2::Sftp,
    path: &Path,
) -> anyhow::Result<Option<String>> {
    let out = remote.exec(&format!(
        "if [ -f {p} ]; then if command -v sha256sum >/dev/null 2>&1; then sha256sum {p}; \
         else echo NO-SHA256SUM; fi; else echo MISSING; fi",
        p = quote_path(path)
    ))?;
    let stdout = out.stdout.trim();
    if stdout == "MISSING" {
        return Ok(None);
    }
    if out.success() && stdout != "NO-SHA256SUM" {
        if let Some(hash) = stdout.split_whitespace().next() {
            if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(Some(hash.to_ascii_lowercase()));
            }
        }
    }
    // Fall back to reading the file over SFTP.
    let mut file = match sftp.open(path) {
        Ok(file) => file,
        Err(_) => return Ok(None),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| anyhow!("cannot read {} back over SFTP: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Creates `dir` (and parents) on the host.
pub fn ensure_dir(remote: &Remote, dir: &Path) -> anyhow::Result<()> {
    let out = remote.exec(&format!("mkdir -p {}", quote_path(dir)))?;
    if !out.success() {
        bail!(
            "cannot create remote directory {}: {}",
            dir.display(),
            out.stderr.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_name_is_hidden_in_same_dir() {
        let t = temp_name(Path::new("/opt/hermes/worker"));
        assert_eq!(t.parent(), Some(Path::new("/opt/hermes")));
        assert!(t
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".worker.tmp-"));
    }

    #[test]
    fn df_available_column() {
        assert_eq!(available_kib("/dev/sda1  1000  990  10  99% /"), Some(10));
        assert_eq!(available_kib("garbage"), None);
    }

    #[test]
    fn sha_of_content() {
        assert_eq!(
            LocalFile::from_bytes(b"abc".to_vec()).sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
