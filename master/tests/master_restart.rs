//! `kill -9` of the master mid-run, then the same command again: the run
//! continues from its checkpoint — the version sequence in metrics.csv is
//! continuous (nothing truncated, nothing twice), no update is applied
//! twice (the checkpoint's ledger), the workers carry on without being
//! restarted, and the run reaches its target.

mod cluster;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster::Cluster;

#[test]
fn a_killed_master_resumes_its_run_and_the_workers_carry_on() {
    let cluster = Cluster::new("restart", |m| {
        m["min_workers"] = 2.into();
        m["policy"]["name"] = "asp".into();
        m["stop"]["target_accuracy"] = 0.88.into();
        m["training"]["optimizer"]["lr"] = 0.0002.into();
    });
    let mut first = cluster.master();
    let _w1 = cluster.worker("worker-1", 2.0);
    let _w2 = cluster.worker("worker-2", 2.0);
    assert!(
        first.wait_for("global version 2:", Duration::from_secs(120)),
        "no version 2:\n{}",
        first.output()
    );
    // Then at a random moment: between versions, while evaluating, while a
    // checkpoint is being written.
    let pause = rand::random::<u64>() % 1500;
    eprintln!("killing the master {pause} ms after version 2");
    std::thread::sleep(Duration::from_millis(pause));
    first.kill();
    let before = std::fs::read_to_string(cluster.run_dir().join("metrics.csv")).unwrap();
    let mut second = cluster.master();
    let code = second.wait_exit(Duration::from_secs(180));
    let out = second.output();
    assert_eq!(code, Some(0), "the restarted master failed:\n{out}");
    assert!(
        out.contains("resuming the run from its checkpoint"),
        "{out}"
    );
    let summary = cluster.summary();
    assert_eq!(
        summary["stop_reason"], "target accuracy reached",
        "{summary}"
    );

    // metrics.csv: the first master's rows are all still there, and the
    // versions go on without a gap or a repeat.
    let after = std::fs::read_to_string(cluster.run_dir().join("metrics.csv")).unwrap();
    assert!(after.starts_with(&before), "metrics.csv was rewritten");
    let versions: Vec<u64> = after
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    // The first master's last recorded version; the resumed master goes on
    // from there (or, killed after reaching the target but before its
    // summary, finishes at once with nothing to add).
    let last_before = versions[before.lines().count() - 2];
    for w in versions.windows(2) {
        // A version recorded twice or skipped is a defect.
        assert_eq!(w[1], w[0] + 1, "versions {versions:?}");
    }
    assert!(last_before >= 2, "{versions:?}");
    let finished_at_once = versions.len() == before.lines().count() - 1
        || out.contains("recording it now") && versions.len() == before.lines().count();
    assert_eq!(summary["versions"], *versions.last().unwrap());

    // The checkpoint's ledger: every applied (worker, incarnation, sequence) once.
    let ckpt = master::checkpoint::load(&cluster.run_dir().join("checkpoint.bin")).unwrap();
    let mut seen = BTreeSet::new();
    for e in &ckpt.ledger {
        assert!(
            seen.insert((e.worker.clone(), e.incarnation, e.sequence)),
            "applied twice: {e:?}"
        );
    }
    assert_eq!(ckpt.ledger.len() as u64, ckpt.accepted);
    eprintln!(
        "killed after version {}, resumed, ended at version {} ({}); {} updates applied once each; rejected {}",
        last_before,
        versions.last().unwrap(),
        summary["stop_reason"],
        ckpt.ledger.len(),
        summary["updates_rejected_by_reason"]
    );
    assert_eq!(summary["updates_accepted"], ckpt.accepted);
    if finished_at_once {
        // The goal was reached before the kill: the workers were sent home.
        eprintln!("the first master had reached the target; the second finished at once");
        return;
    }
    let resumed_versions = versions.last().unwrap() - last_before;
    if resumed_versions < 5 {
        // The target came within a few versions of the restart: not every
        // worker had to rejoin before the end.
        assert!(out.contains("worker rejoined: "), "nobody rejoined:\n{out}");
        return;
    }
    // Both workers came back to the restarted master (same processes).
    for w in ["worker-1", "worker-2"] {
        assert!(
            out.contains(&format!("worker rejoined: {w}")),
            "{w} did not rejoin:\n{out}"
        );
    }
}
