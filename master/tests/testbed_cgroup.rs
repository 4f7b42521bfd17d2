//! Real cgroups (root, cgroup v1 or v2): a CPU cap's measured share, a memory cap's OOM kill,
//! and removal that leaves nothing behind. Without root or usable controllers each test is
//! skipped with a note on stderr, unless `HERMES_TESTBED_TESTS=required` (CI): then it fails.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use master::testbed::cgroup::{apply_to_command, Caps, CgroupSystem, CgroupVersion, NodeCgroup};

const MIB: u64 = 1 << 20;

/// The tests share the cores (a CPU share is only exact on an otherwise idle cgroup) and the
/// `hermes/` directories: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn system(test: &str) -> Option<CgroupSystem> {
    let required = std::env::var("HERMES_TESTBED_TESTS").is_ok_and(|v| v == "required");
    let skip = |why: &str| {
        assert!(!required, "{test}: {why} (HERMES_TESTBED_TESTS=required)");
        eprintln!("skipping {test}: {why}");
        None
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root");
    }
    match CgroupSystem::detect() {
        Ok(Some(system)) => {
            eprintln!("{test}: {}", system.describe());
            Some(system)
        }
        Ok(None) => skip("no usable cgroup v1 or v2 cpu + memory controllers"),
        Err(e) => panic!("{test}: detect: {e}"),
    }
}

/// A testbed name of this test process alone.
fn testbed(tag: &str) -> String {
    format!("it-{}-{tag}", std::process::id())
}

/// However a test ends: kill the nodes' processes, reap our children, remove the cgroups.
#[derive(Default)]
struct Guard {
    nodes: Vec<NodeCgroup>,
    children: Vec<Child>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for node in &self.nodes {
            if let Err(e) = node.kill_all() {
                eprintln!("cleanup: {e}");
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in &self.nodes {
            if let Err(e) = node.remove() {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

fn spawn_in(node: &NodeCgroup, program: &str, args: &[&str]) -> Child {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    apply_to_command(node, &mut cmd).expect("pre_exec hook");
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {program}: {e}"))
}

fn wait_at_most(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < limit,
            "pid {} still running after {limit:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// utime + stime of a process, in seconds, from /proc/<pid>/stat.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name "(...)": state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("comm") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

/// The share of one core `pid` used over `window`.
fn share_of_one_core(pid: u32, window: Duration) -> f64 {
    let (c0, t0) = (cpu_secs(pid), Instant::now());
    std::thread::sleep(window);
    (cpu_secs(pid) - c0) / t0.elapsed().as_secs_f64()
}

/// The kernel's record of the node's peak memory use, where it keeps one.
fn peak_memory(system: &CgroupSystem, node: &NodeCgroup) -> Option<u64> {
    let file = match system.version() {
        CgroupVersion::V1 => "memory.max_usage_in_bytes",
        CgroupVersion::V2 => "memory.peak",
    };
    let text = node
        .paths()
        .iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())?;
    text.trim().parse().ok()
}

#[test]
fn cpu_cap_gives_a_quarter_core_and_changes_live() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(system) = system("cpu_cap") else {
        return;
    };
    let mut guard = Guard::default();
    let quarter = Caps {
        cpu: Some(0.25),
        memory_bytes: None,
    };
    let node = system
        .create(&testbed("cpu"), "busy", &quarter)
        .expect("create");
    guard.nodes.push(node.clone());
    let child = spawn_in(&node, "/bin/sh", &["-c", "while :; do :; done"]);
    let pid = child.id();
    guard.children.push(child);
    assert!(
        node.pids().expect("pids").contains(&(pid as i32)),
        "the child is in the cgroup"
    );
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    assert!(
        proc_cgroup.contains(&format!("/hermes/{}/busy", testbed("cpu"))),
        "{proc_cgroup}"
    );

    let share = share_of_one_core(pid, Duration::from_secs(3));
    eprintln!(
        "cap 0.25 core: busy loop got {:.1}% of one core over 3 s",
        share * 100.0
    );
    assert!(
        (share - 0.25).abs() <= 0.05,
        "share {share:.3} not 0.25 ± 0.05"
    );

    let half = Caps {
        cpu: Some(0.5),
        ..quarter
    };
    node.set(&half).expect("set live");
    let share = share_of_one_core(pid, Duration::from_secs(2));
    eprintln!(
        "cap 0.5 core (set live): busy loop got {:.1}% of one core over 2 s",
        share * 100.0
    );
    assert!(
        (share - 0.5).abs() <= 0.05,
        "share {share:.3} not 0.5 ± 0.05"
    );

    let by_proc = cpu_secs(pid);
    match node.cpu_usage_secs().expect("cpu usage") {
        Some(by_cgroup) => {
            eprintln!("cpu time: cgroup {by_cgroup:.3} s, /proc {by_proc:.3} s");
            assert!(
                (by_cgroup - by_proc).abs() < 0.1,
                "cgroup {by_cgroup} vs /proc {by_proc}"
            );
        }
        None => eprintln!("cpu time: the cgroup does not account it (/proc {by_proc:.3} s)"),
    }
}

#[test]
fn memory_cap_kills_the_process_that_exceeds_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(system) = system("memory_cap") else {
        return;
    };
    let mut guard = Guard::default();
    let caps = Caps {
        cpu: None,
        memory_bytes: Some(64 * MIB),
    };
    let node = system
        .create(&testbed("mem"), "hog", &caps)
        .expect("create");
    guard.nodes.push(node.clone());

    // dd reads /dev/zero into one buffer of `bs` bytes: the kernel writes every page of it.
    let below = ["if=/dev/zero", "of=/dev/null", "bs=16M", "count=4"];
    let mut child = spawn_in(&node, "dd", &below);
    let status = wait_at_most(&mut child, Duration::from_secs(10));
    let peak = peak_memory(&system, &node);
    eprintln!(
        "16 MiB buffer under a 64 MiB cap: {status}, peak {:?} MiB",
        peak.map(|p| p / MIB)
    );
    assert!(
        status.success(),
        "the process below the cap survives: {status}"
    );
    if let Some(peak) = peak {
        assert!(
            peak >= 16 * MIB,
            "its pages were really touched: peak {peak}"
        );
    }

    let above = ["if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"];
    let mut child = spawn_in(&node, "dd", &above);
    let status = wait_at_most(&mut child, Duration::from_secs(10));
    let peak = peak_memory(&system, &node);
    eprintln!(
        "128 MiB buffer under a 64 MiB cap: {status}, peak {:?} MiB",
        peak.map(|p| p / MIB)
    );
    assert_eq!(status.signal(), Some(libc::SIGKILL), "OOM-killed: {status}");
    if let Some(peak) = peak {
        assert!(peak <= 64 * MIB, "never above the cap: peak {peak}");
    }

    // As a shell reports it: exit status 137 = 128 + SIGKILL.
    let script = format!("dd {} 2>/dev/null; echo $? >&2; exit 0", above.join(" "));
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    apply_to_command(&node, &mut cmd).expect("pre_exec hook");
    let out = cmd.output().expect("sh");
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "137");
}

#[test]
fn remove_kills_everything_and_leaves_no_directory() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let Some(system) = system("remove") else {
        return;
    };
    let mut guard = Guard::default();
    let tb = testbed("rm");
    let caps = Caps {
        cpu: Some(0.5),
        memory_bytes: Some(32 * MIB),
    };
    let a = system.create(&tb, "a", &caps).expect("create a");
    let b = system.create(&tb, "b", &Caps::default()).expect("create b");
    guard.nodes.extend([a.clone(), b.clone()]);
    // A shell with a background grandchild: removal must get both.
    for node in [&a, &b] {
        guard.children.push(spawn_in(
            node,
            "/bin/sh",
            &["-c", "sleep 30 & sleep 30; wait"],
        ));
    }
    let start = Instant::now();
    while a.pids().expect("pids").len() < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a.pids().expect("pids").len(), 3, "sh and two sleeps");
    let recorded: Vec<PathBuf> = b.paths().to_vec();

    a.remove().expect("remove a");
    let status = guard.children[0].wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    for dir in a.paths() {
        assert!(!dir.exists(), "{}", dir.display());
        assert!(
            dir.parent().is_some_and(Path::is_dir),
            "the testbed dir stays for b"
        );
    }

    // `down` after a crash: rebuilt from recorded paths, removed twice.
    let rebuilt = NodeCgroup::from_paths(&recorded).expect("from_paths");
    let t0 = Instant::now();
    rebuilt.remove().expect("remove b");
    eprintln!("remove (kill 3 processes, rmdir): {:?}", t0.elapsed());
    rebuilt.remove().expect("remove again");
    let status = guard.children[1].wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    // A stale node: the pre_exec hook fails, so the child never runs uncapped.
    let mut cmd = Command::new("/bin/true");
    apply_to_command(&rebuilt, &mut cmd).expect("pre_exec hook");
    let err = cmd.status().expect_err("no cgroup to join");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");

    for dir in a.paths().iter().chain(&recorded) {
        let testbed_dir = dir.parent().expect("testbed dir");
        let hermes = testbed_dir.parent().expect("hermes dir");
        assert!(!testbed_dir.exists(), "{}", testbed_dir.display());
        if let Ok(entries) = std::fs::read_dir(hermes) {
            let left: Vec<_> = entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name())
                .collect();
            eprintln!("{} still holds other testbeds: {left:?}", hermes.display());
            assert!(
                !left.is_empty(),
                "an empty {} was left behind",
                hermes.display()
            );
            let ours = format!("it-{}-", std::process::id());
            assert!(
                !left.iter().any(|n| n.to_string_lossy().starts_with(&ours)),
                "{left:?}"
            );
        }
    }
}
