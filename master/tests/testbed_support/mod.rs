//! Shared by the `testbed_*` integration tests: the root gate and the check
//! that a testbed left nothing behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// True when the tests can run (root). Without root they are skipped with a
/// line on stderr, unless `HERMES_TESTBED_TESTS=required` (CI sets it):
/// then they fail.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("HERMES_TESTBED_TESTS").as_deref() == Ok("required") {
        panic!("testbed tests need root (HERMES_TESTBED_TESTS=required)");
    }
    eprintln!("skipped: testbed tests need root");
    false
}

/// The repository root (the binaries run from there).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn stdout(program: &str, args: &[&str]) -> String {
    String::from_utf8(Command::new(program).args(args).output().unwrap().stdout).unwrap()
}

/// Asserts nothing of testbed `name` is left: no namespace or link named
/// after it, no cgroup directory, no state file in `state_dir`.
pub fn assert_testbed_gone(name: &str, state_dir: &Path) {
    let prefix = format!("hb{name}");
    let ns = stdout("ip", &["netns", "list"]);
    assert!(
        !ns.lines().any(|l| l.starts_with(&prefix)),
        "namespaces left: {ns}"
    );
    let links = stdout("ip", &["-o", "link", "show"]);
    assert!(
        !links.lines().any(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|n| n.starts_with(&prefix))),
        "links left: {links}"
    );
    if let Some(sys) = master::testbed::cgroup::CgroupSystem::detect().unwrap() {
        for p in sys.node_paths(name, "x").unwrap() {
            let testbed_dir = p.parent().unwrap();
            assert!(!testbed_dir.exists(), "{} left", testbed_dir.display());
        }
    }
    assert!(
        !state_dir.join(format!("{name}.json")).exists(),
        "state file left"
    );
}
