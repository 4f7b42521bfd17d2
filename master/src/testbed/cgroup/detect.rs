//! Finding the cgroup mounts of this machine and this process's place in them.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{read_opt, write, CgroupError, CgroupSystem};

/// See [`CgroupSystem::detect`].
pub(super) fn detect() -> Result<Option<CgroupSystem>, CgroupError> {
    let Some(mountinfo) = read_opt(Path::new("/proc/self/mountinfo"))? else {
        tracing::info!("no /proc/self/mountinfo: cgroup caps unavailable");
        return Ok(None);
    };
    let own = read_opt(Path::new("/proc/self/cgroup"))?.unwrap_or_default();
    let mounts = parse_mountinfo(&mountinfo);
    let own = parse_proc_cgroup(&own);
    let v2 = match detect_v2(&mounts, &own) {
        Ok(system) => return Ok(Some(system)),
        Err(why) => why,
    };
    let v1 = match detect_v1(&mounts, &own) {
        Ok(system) => return Ok(Some(system)),
        Err(why) => why,
    };
    tracing::info!("no usable cgroup controllers ({v2}; {v1})");
    Ok(None)
}

/// Checks that a v2 cgroup offers `cpu` and `memory` and enables them for its children.
pub(super) fn enable_v2_controllers(dir: &Path) -> Result<(), CgroupError> {
    let controllers = dir.join("cgroup.controllers");
    let available = read_opt(&controllers)?.unwrap_or_default();
    let subtree = dir.join("cgroup.subtree_control");
    let enabled = read_opt(&subtree)?.unwrap_or_default();
    let mut missing = Vec::new();
    for controller in ["cpu", "memory"] {
        if !available.split_whitespace().any(|c| c == controller) {
            return Err(CgroupError::ControllerUnavailable {
                path: dir.to_path_buf(),
                controller,
                available: available.trim().to_string(),
            });
        }
        if !enabled.split_whitespace().any(|c| c == controller) {
            missing.push(format!("+{controller}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        write(&subtree, &missing.join(" "))
    }
}

#[derive(Debug, PartialEq)]
struct Mount {
    root: PathBuf,
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

/// Mounts from /proc/self/mountinfo: `id parent dev root point opts [optional...] - fstype
/// source superopts`, with octal escapes (`\040`) in paths.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let options = post
                .nth(1)
                .unwrap_or("")
                .split(',')
                .map(String::from)
                .collect();
            Some(Mount {
                root: unescape(pre.get(3)?),
                point: unescape(pre.get(4)?),
                fstype,
                options,
            })
        })
        .collect()
}

fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Lines of /proc/self/cgroup: `hierarchy-id:controllers:path` (v2: `0::path`).
fn parse_proc_cgroup(text: &str) -> Vec<(String, Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.to_string();
            let controllers = parts
                .next()?
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            Some((id, controllers, parts.next()?.to_string()))
        })
        .collect()
}

/// This process's directory in a hierarchy: the mount point plus its cgroup path relative to
/// the mount's root; the mount point when that is not visible.
fn own_dir(mount: &Mount, own_path: Option<&str>) -> PathBuf {
    let rel = own_path.and_then(|p| Path::new(p).strip_prefix(&mount.root).ok());
    match rel {
        Some(rel) if !rel.as_os_str().is_empty() && mount.point.join(rel).is_dir() => {
            mount.point.join(rel)
        }
        _ => mount.point.clone(),
    }
}

fn detect_v2(
    mounts: &[Mount],
    own: &[(String, Vec<String>, String)],
) -> Result<CgroupSystem, String> {
    let mount = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .ok_or("v2: no cgroup2 mount")?;
    let own_path = own
        .iter()
        .find(|(id, c, _)| id == "0" && c.is_empty())
        .map(|(_, _, p)| p.as_str());
    let mut candidates = vec![own_dir(mount, own_path)];
    if candidates[0] != mount.point {
        candidates.push(mount.point.clone());
    }
    let mut why = Vec::new();
    for base in candidates {
        match enable_v2_controllers(&base) {
            Ok(()) => return Ok(CgroupSystem::v2(base)),
            Err(e) => why.push(e.to_string()),
        }
    }
    Err(format!("v2: {}", why.join("; ")))
}

fn detect_v1(
    mounts: &[Mount],
    own: &[(String, Vec<String>, String)],
) -> Result<CgroupSystem, String> {
    let base = |controller: &str| -> Option<PathBuf> {
        let mount = mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))?;
        let own_path = own
            .iter()
            .find(|(_, c, _)| c.iter().any(|c| c == controller));
        Some(own_dir(mount, own_path.map(|(_, _, p)| p.as_str())))
    };
    let cpu = base("cpu").ok_or("v1: no cpu hierarchy mounted")?;
    let memory = base("memory").ok_or("v1: no memory hierarchy mounted")?;
    let cpuacct = base("cpuacct").filter(|d| d.join("cpuacct.usage").exists());
    for (dir, file) in [
        (&cpu, "cpu.cfs_quota_us"),
        (&memory, "memory.limit_in_bytes"),
    ] {
        if !dir.join(file).exists() {
            return Err(format!("v1: no {file} in {}", dir.display()));
        }
        let writable = CString::new(dir.as_os_str().as_bytes())
            // SAFETY: access(2) on a valid NUL-terminated path.
            .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
            .unwrap_or(false);
        if !writable {
            return Err(format!("v1: {} is not writable", dir.display()));
        }
    }
    Ok(CgroupSystem::v1(cpu, memory, cpuacct))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const MOUNTINFO: &str = "\
25 24 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
28 25 0:25 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
29 25 0:26 / /mnt/my\\040dir rw - ext4 /dev/sda1 rw
";

    #[test]
    fn mountinfo_and_proc_cgroup_parse() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[1].fstype, "cgroup2");
        assert_eq!(mounts[2].point, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts[2].options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[3].root, Path::new("/docker/abc"));
        assert_eq!(mounts[4].point, Path::new("/mnt/my dir"));
        let own = parse_proc_cgroup("4:memory:/docker/abc/x\n2:cpu,cpuacct:/\n0::/user.slice\n");
        assert_eq!(
            own[1],
            ("2".into(), vec!["cpu".into(), "cpuacct".into()], "/".into())
        );
        assert_eq!(own[2], ("0".into(), vec![], "/user.slice".into()));
    }

    fn mount(point: &Path, fstype: &str, options: &str) -> Mount {
        Mount {
            root: PathBuf::from("/"),
            point: point.to_path_buf(),
            fstype: fstype.into(),
            options: options.split(',').map(String::from).collect(),
        }
    }

    #[test]
    fn v1_is_found_with_combined_mounts_and_nested_own_cgroup() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cpu = tmp.path().join("cpu,cpuacct");
        let memory = tmp.path().join("memory");
        let nested = memory.join("sandbox/x");
        fs::create_dir_all(&cpu).expect("mkdir");
        fs::create_dir_all(&nested).expect("mkdir");
        for file in [cpu.join("cpu.cfs_quota_us"), cpu.join("cpuacct.usage")] {
            fs::write(file, "-1").expect("write");
        }
        let mounts = [
            mount(&cpu, "cgroup", "rw,cpu,cpuacct"),
            mount(&memory, "cgroup", "rw,memory"),
        ];
        let own = parse_proc_cgroup("3:memory:/sandbox/x\n2:cpu,cpuacct:/\n");
        let why = detect_v1(&mounts, &own).expect_err("no memory.limit_in_bytes yet");
        assert!(why.contains("memory.limit_in_bytes"), "{why}");
        fs::write(nested.join("memory.limit_in_bytes"), "-1").expect("write");
        let system = detect_v1(&mounts, &own).expect("v1");
        assert_eq!(system, CgroupSystem::v1(&cpu, &nested, None));
        assert!(detect_v2(&mounts, &own).is_err(), "no cgroup2 mount");
    }

    #[test]
    fn v2_falls_back_to_the_mount_root_and_enables_controllers() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("unified");
        let own_dir = root.join("user.slice");
        fs::create_dir_all(&own_dir).expect("mkdir");
        fs::write(root.join("cgroup.controllers"), "cpu io memory pids\n").expect("write");
        fs::write(root.join("cgroup.subtree_control"), "cpu\n").expect("write");
        fs::write(own_dir.join("cgroup.controllers"), "pids\n").expect("write");
        let mounts = [mount(&root, "cgroup2", "rw")];
        let own = parse_proc_cgroup("0::/user.slice\n");
        let system = detect_v2(&mounts, &own).expect("v2");
        assert_eq!(system, CgroupSystem::v2(&root));
        assert_eq!(
            fs::read_to_string(root.join("cgroup.subtree_control")).expect("read"),
            "+memory"
        );
        fs::write(root.join("cgroup.controllers"), "io\n").expect("write");
        let why = detect_v2(&mounts, &own).expect_err("no controllers");
        assert!(why.contains("cpu controller"), "{why}");
    }
}
