//! Catches a worker binary built for the wrong CPU before it is uploaded.
//!
//! The ELF header's `e_machine` field of the local binary is compared with
//! the host's `uname -m`. Non-ELF files (scripts) and unknown machines are
//! not judged here; a binary that still cannot run is caught after start.

/// CPU architecture of an ELF file, in `uname -m` spelling, or `None` when
/// `bytes` is not ELF or names a machine this table does not know.
pub fn elf_machine(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let raw = [bytes[18], bytes[19]];
    let machine = match bytes[5] {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        _ => return None,
    };
    Some(match machine {
        3 => "i686",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        _ => return None,
    })
}

/// Normalizes `uname -m` output to the names [`elf_machine`] uses.
pub fn normalize_uname(uname: &str) -> String {
    let m = uname.trim();
    match m {
        "amd64" => "x86_64".into(),
        "arm64" => "aarch64".into(),
        "i386" | "i486" | "i586" => "i686".into(),
        _ if m.starts_with("armv") => "arm".into(),
        _ => m.into(),
    }
}

/// `Err` with a clear message when an ELF `binary` cannot run on a host
/// whose `uname -m` is `uname`.
pub fn check(binary: &[u8], uname: &str) -> anyhow::Result<()> {
    let Some(built_for) = elf_machine(binary) else {
        return Ok(());
    };
    let host = normalize_uname(uname);
    if host.is_empty() || host == built_for {
        return Ok(());
    }
    anyhow::bail!(
        "binary not executable on this host (exec format error): the worker binary is built \
         for {built_for} but the host is {host}; set `binary` for this host to a {host} build \
         (e.g. cargo build --release --target <{host} triple> -p worker)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, 1, 1, 0];
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&machine.to_le_bytes());
        h.extend_from_slice(&[0; 40]);
        h
    }

    #[test]
    fn reads_machine() {
        assert_eq!(elf_machine(&header(2, 62)), Some("x86_64"));
        assert_eq!(elf_machine(&header(2, 183)), Some("aarch64"));
        assert_eq!(elf_machine(b"#!/bin/sh\necho hi\n"), None);
    }

    #[test]
    fn mismatch_is_refused() {
        assert!(check(&header(2, 62), "x86_64\n").is_ok());
        assert!(check(&header(1, 40), "armv7l").is_ok());
        let err = check(&header(2, 183), "x86_64").unwrap_err().to_string();
        assert!(
            err.contains("exec format error") && err.contains("aarch64"),
            "{err}"
        );
        assert!(check(b"#!/bin/sh", "x86_64").is_ok());
    }
}
