//! Unit tests against a temporary directory that imitates cgroupfs.

use std::ffi::CString;
use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::*;

const MIB: u64 = 1 << 20;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn put(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Deletes the regular files under `dir`, as the kernel does when a cgroup is removed (its
/// control files vanish with the directory), so `rmdir` works on the imitation too.
fn strip_files(dir: &Path) {
    for entry in fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            strip_files(&path);
        } else {
            fs::remove_file(&path).expect("remove_file");
        }
    }
}

struct V1 {
    _tmp: TempDir,
    cpu: PathBuf,
    memory: PathBuf,
    cpuacct: PathBuf,
    system: CgroupSystem,
}

fn v1() -> V1 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let [cpu, memory, cpuacct] = ["cpu", "memory", "cpuacct"].map(|c| tmp.path().join(c));
    for dir in [&cpu, &memory, &cpuacct] {
        fs::create_dir(dir).expect("mkdir");
    }
    let system = CgroupSystem::v1(&cpu, &memory, Some(cpuacct.clone()));
    V1 {
        _tmp: tmp,
        cpu,
        memory,
        cpuacct,
        system,
    }
}

/// A v2 base offering all controllers, with `hermes/<testbed>` already there (the kernel
/// would fill in their `cgroup.controllers` when they are created).
fn v2(testbed: &str) -> (TempDir, PathBuf, CgroupSystem) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("unified");
    let parent = base.join(HERMES_DIR).join(testbed);
    fs::create_dir_all(&parent).expect("mkdir");
    put(
        &base.join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    for dir in [base.join(HERMES_DIR), parent] {
        put(&dir.join("cgroup.controllers"), "cpu memory\n");
    }
    for dir in [
        base.clone(),
        base.join(HERMES_DIR),
        base.join(HERMES_DIR).join(testbed),
    ] {
        put(&dir.join("cgroup.subtree_control"), "");
    }
    let system = CgroupSystem::v2(&base);
    (tmp, base, system)
}

fn caps(cpu: Option<f64>, memory_bytes: Option<u64>) -> Caps {
    Caps { cpu, memory_bytes }
}

#[test]
fn v1_create_writes_caps_and_set_changes_them_live() {
    let t = v1();
    assert_eq!(t.system.version(), CgroupVersion::V1);
    assert!(t
        .system
        .describe()
        .starts_with("cgroup v1: cpu.cfs_quota_us / memory.limit_in_bytes"));
    let node = t
        .system
        .create("tb1", "n1", &caps(Some(0.25), Some(64 * MIB)))
        .expect("create");
    let at = |root: &Path| root.join("hermes/tb1/n1");
    let (cpu, memory) = (at(&t.cpu), at(&t.memory));
    assert_eq!(node.paths(), &[cpu.clone(), memory.clone(), at(&t.cpuacct)]);
    assert_eq!(
        node.paths(),
        t.system.node_paths("tb1", "n1").expect("paths").as_slice()
    );
    assert_eq!(node.procs_files()[1], memory.join("cgroup.procs"));
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "25000");
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "67108864");

    node.set(&caps(Some(1.5), None)).expect("set");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "150000");
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "-1");
    node.set(&caps(None, Some(128 * MIB))).expect("set");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "-1");

    // With swap accounting, memsw follows the limit (no swapping past the cap).
    put(&memory.join("memory.memsw.limit_in_bytes"), "-1");
    node.set(&caps(None, Some(32 * MIB))).expect("set");
    assert_eq!(read(&memory.join("memory.limit_in_bytes")), "33554432");
    assert_eq!(
        read(&memory.join("memory.memsw.limit_in_bytes")),
        "33554432"
    );

    assert!(matches!(
        node.set(&caps(Some(0.001), None)),
        Err(CgroupError::InvalidCaps(_))
    ));
    assert_eq!(
        read(&cpu.join("cpu.cfs_quota_us")),
        "-1",
        "an invalid cap writes nothing"
    );

    assert_eq!(node.cpu_usage_secs().expect("usage"), None);
    put(&at(&t.cpuacct).join("cpuacct.usage"), "1500000000\n");
    assert_eq!(node.cpu_usage_secs().expect("usage"), Some(1.5));
}

#[test]
fn v1_combined_cpu_cpuacct_hierarchy() {
    let t = v1();
    let system = CgroupSystem::v1(&t.cpu, &t.memory, Some(t.cpu.clone()));
    let node = system.create("tb", "n", &Caps::default()).expect("create");
    assert_eq!(node.paths().len(), 2);
    put(&node.paths()[0].join("cpuacct.usage"), "250000000");
    assert_eq!(node.cpu_usage_secs().expect("usage"), Some(0.25));
    // cpu and memory co-mounted: a single directory serves both.
    let single = CgroupSystem::v1(&t.cpu, &t.cpu, None);
    let node = single
        .create("tb", "m", &caps(Some(0.5), Some(8 * MIB)))
        .expect("create");
    assert_eq!(node.paths(), &[t.cpu.join("hermes/tb/m")]);
    assert_eq!(
        read(&node.paths()[0].join("memory.limit_in_bytes")),
        "8388608"
    );
}

#[test]
fn v2_create_enables_controllers_and_writes_caps() {
    let (_tmp, base, system) = v2("tb");
    assert_eq!(system.version(), CgroupVersion::V2);
    assert!(system
        .describe()
        .starts_with("cgroup v2: cpu.max / memory.max"));
    let node = system
        .create("tb", "n1", &caps(Some(0.25), Some(64 * MIB)))
        .expect("create");
    let dir = base.join("hermes/tb/n1");
    assert_eq!(node.paths(), std::slice::from_ref(&dir));
    for parent in [base.clone(), base.join("hermes"), base.join("hermes/tb")] {
        assert_eq!(read(&parent.join("cgroup.subtree_control")), "+cpu +memory");
    }
    assert_eq!(read(&dir.join("cpu.max")), "25000 100000");
    assert_eq!(read(&dir.join("memory.max")), "67108864");
    assert!(
        !dir.join("memory.swap.max").exists(),
        "only written where present"
    );

    put(&dir.join("memory.swap.max"), "max");
    node.set(&caps(None, Some(16 * MIB))).expect("set");
    assert_eq!(read(&dir.join("cpu.max")), "max 100000");
    assert_eq!(read(&dir.join("memory.max")), "16777216");
    assert_eq!(read(&dir.join("memory.swap.max")), "0");
    node.set(&Caps::default()).expect("set");
    assert_eq!(read(&dir.join("memory.max")), "max");
    assert_eq!(read(&dir.join("memory.swap.max")), "max");

    put(
        &dir.join("cpu.stat"),
        "usage_usec 2500000\nuser_usec 2000000\n",
    );
    assert_eq!(node.cpu_usage_secs().expect("usage"), Some(2.5));
}

#[test]
fn v2_without_a_controller_is_refused() {
    let (_tmp, base, system) = v2("tb");
    put(&base.join("cgroup.controllers"), "cpu io pids\n");
    let err = system
        .create("tb", "n", &Caps::default())
        .expect_err("no memory");
    assert!(matches!(
        err,
        CgroupError::ControllerUnavailable {
            controller: "memory",
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains(&base.display().to_string()) && msg.contains("memory"),
        "{msg}"
    );
    assert!(!base.join("hermes/tb/n").exists());
}

#[test]
fn names_are_validated() {
    let t = v1();
    let long = "x".repeat(65);
    for bad in [
        "", "a/b", "..", ".", "a.b", "-x", "_x", "x y", "é", "a\0b", "../etc", &long,
    ] {
        for (testbed, node) in [(bad, "n"), ("tb", bad)] {
            let err = t
                .system
                .create(testbed, node, &Caps::default())
                .expect_err(bad);
            assert!(
                matches!(err, CgroupError::InvalidName { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
    assert!(
        !t.cpu.join("hermes").exists(),
        "nothing created for a bad name"
    );
    for good in ["edge1", "tb_2024-01", "N", &"y".repeat(64)] {
        t.system.create(good, good, &Caps::default()).expect(good);
    }
}

#[test]
fn memory_strings_parse() {
    for (input, bytes) in [
        ("1048576", 1 << 20),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("64MiB", 64 << 20),
        ("64mb", 64 << 20),
        ("8k", 8 << 10),
        ("1T", 1 << 40),
        (" 100 MiB ", 100 << 20),
        ("4096B", 4096),
        ("1.5G", 3 << 29),
        ("0.5k", 512),
    ] {
        assert_eq!(Caps::parse_memory(input).expect(input), bytes, "{input:?}");
    }
    for bad in [
        "",
        "M",
        "-1M",
        "12X",
        "1.5",
        "1.2.3G",
        "99999999999999999999",
        "20000000T",
        "5 M B",
    ] {
        let err = Caps::parse_memory(bad).expect_err(bad);
        assert!(matches!(err, CgroupError::InvalidMemory { .. }), "{bad:?}");
        assert!(
            err.to_string().contains("512M"),
            "the message shows the syntax: {err}"
        );
    }
}

#[test]
fn caps_are_validated() {
    for ok in [
        caps(None, None),
        caps(Some(0.01), Some(4 * MIB)),
        caps(Some(1024.0), Some(u64::MAX)),
    ] {
        ok.validate().expect("valid");
    }
    for bad in [
        caps(Some(0.0), None),
        caps(Some(-1.0), None),
        caps(Some(0.009), None),
        caps(Some(f64::NAN), None),
        caps(Some(f64::INFINITY), None),
        caps(Some(2000.0), None),
        caps(None, Some(4 * MIB - 1)),
        caps(None, Some(0)),
    ] {
        assert!(
            matches!(bad.validate(), Err(CgroupError::InvalidCaps(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        caps(Some(0.25), Some(64 * MIB)).to_string(),
        "cpu 0.25 cores, memory 64.0 MiB"
    );
}

#[test]
fn remove_is_idempotent_and_keeps_siblings() {
    let t = v1();
    let a = t
        .system
        .create("tb", "a", &caps(Some(0.5), None))
        .expect("create a");
    let b = t
        .system
        .create("tb", "b", &caps(None, Some(8 * MIB)))
        .expect("create b");
    strip_files(t._tmp.path());
    a.remove().expect("remove a");
    for root in [&t.cpu, &t.memory, &t.cpuacct] {
        assert!(!root.join("hermes/tb/a").exists());
        assert!(root.join("hermes/tb/b").is_dir(), "the sibling stays");
    }
    b.remove().expect("remove b");
    for root in [&t.cpu, &t.memory, &t.cpuacct] {
        assert!(!root.join("hermes").exists(), "{}", root.display());
        assert!(root.is_dir());
    }
    b.remove().expect("again");
    NodeCgroup::from_paths(a.paths())
        .expect("gone dirs are accepted")
        .remove()
        .expect("remove rebuilt");

    let (tmp, base, system) = v2("tb");
    let node = system.create("tb", "n", &Caps::default()).expect("create");
    strip_files(tmp.path());
    node.remove().expect("remove v2");
    node.remove().expect("again");
    assert!(!base.join("hermes").exists());
}

#[test]
fn from_paths_rebuilds_and_refuses_foreign_paths() {
    let t = v1();
    let node = t
        .system
        .create("tb", "n", &caps(Some(0.5), None))
        .expect("create");
    put(&t.cpuacct.join("hermes/tb/n/cpuacct.usage"), "0");
    let rebuilt = NodeCgroup::from_paths(node.paths()).expect("rebuild");
    assert_eq!(rebuilt, node);
    rebuilt.set(&caps(Some(0.75), None)).expect("set");
    assert_eq!(read(&t.cpu.join("hermes/tb/n/cpu.cfs_quota_us")), "75000");

    let (_tmp, _base, system) = v2("tb");
    let node = system.create("tb", "n", &Caps::default()).expect("create");
    let rebuilt = NodeCgroup::from_paths(node.paths()).expect("rebuild");
    assert_eq!((rebuilt.version(), &rebuilt), (CgroupVersion::V2, &node));

    let n1 = t.cpu.join("hermes/tb/n");
    let refused: [&[PathBuf]; 7] = [
        &[],
        std::slice::from_ref(&t.cpu),
        &[PathBuf::from("/sys/fs/cgroup/cpu")],
        &[PathBuf::from("rel/hermes/tb/n")],
        &[t.cpu.join("other/tb/n")],
        &[n1.clone(), t.memory.join("hermes/tb/m")],
        &[n1.clone(), node.paths()[0].clone()],
    ];
    for paths in refused {
        let err = NodeCgroup::from_paths(paths).expect_err("refused");
        assert!(
            matches!(err, CgroupError::NotNodePath { .. }),
            "{paths:?}: {err}"
        );
    }
    let bad_name = NodeCgroup::from_paths(&[t.cpu.join("hermes/t.b/n")]);
    assert!(matches!(bad_name, Err(CgroupError::InvalidName { .. })));
}

#[test]
fn pids_are_read_and_garbage_refused() {
    let t = v1();
    let node = t
        .system
        .create("tb", "n", &Caps::default())
        .expect("create");
    assert_eq!(node.pids().expect("no procs files yet"), Vec::<i32>::new());
    let procs = node.procs_files();
    put(&procs[0], "34\n12\n");
    put(&procs[1], "34\n56\n");
    assert_eq!(node.pids().expect("pids"), vec![12, 34, 56]);
    for garbage in ["0\n", "-1\n", "abc\n"] {
        put(&procs[2], garbage);
        let err = node.pids().expect_err(garbage);
        assert!(
            matches!(err, CgroupError::Parse { .. }),
            "{garbage:?}: {err}"
        );
    }
    // Our own pid in the cgroup: kill_all refuses before it sends anything.
    for file in &procs {
        put(file, "");
    }
    put(&procs[1], &format!("{}\n", std::process::id()));
    let err = node.kill_all().expect_err("self");
    assert!(matches!(err, CgroupError::SelfInCgroup { .. }), "{err}");
}

#[test]
fn join_self_writes_zero_to_each_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let files = [tmp.path().join("a.procs"), tmp.path().join("b.procs")];
    for f in &files {
        put(f, "");
    }
    let c: Vec<CString> = files
        .iter()
        .map(|f| CString::new(f.to_str().expect("utf-8")).expect("no NUL"))
        .collect();
    join_self(&c).expect("join");
    for f in &files {
        assert_eq!(read(f), "0");
    }
    let missing = [CString::new(tmp.path().join("nope").to_str().expect("utf-8")).expect("no NUL")];
    let err = join_self(&missing).expect_err("missing file");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
