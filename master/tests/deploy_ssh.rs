//! `master deploy` against real OpenSSH servers on loopback ports.
//!
//! The "worker" here is a small shell script (the real binaries are used in
//! `deploy_register.rs`); every other part is real: sshd, SFTP, known_hosts,
//! remote processes.

mod support;

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::sshd::{free_port, keygen, process_alive};
use support::Lab;

fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !process_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn up_status_stop_on_two_hosts_and_second_up_uploads_nothing() {
    let lab = Lab::new(2);
    let cluster = lab.write_cluster(vec![lab.host_entry(0), lab.host_entry(1)]);

    // First contact: unknown host keys are recorded with --accept-new.
    let up = lab.deploy(&cluster, &["--accept-new", "up"]);
    assert_eq!(up.code, 0, "deploy up failed");
    let known = std::fs::read_to_string(lab.known_hosts()).unwrap();
    for (i, server) in lab.servers.iter().enumerate() {
        let row = up.row(&format!("host{i}"));
        assert!(row.contains(" ok "), "{row}");
        assert!(row.contains("started (pid"), "{row}");
        assert!(
            row.contains("uploaded worker, onnxruntime, config, run key"),
            "{row}"
        );
        assert!(row.contains("new host key recorded (SHA256:"), "{row}");
        assert!(known.contains(&server.known_hosts_line()), "{known}");

        let dir = &server.remote_dir;
        assert_eq!(
            std::fs::read(dir.join("worker")).unwrap(),
            support::FAKE_WORKER.as_bytes()
        );
        assert_eq!(
            std::fs::metadata(dir.join("worker")).unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(
            std::fs::read(dir.join("lib/libonnxruntime.so")).unwrap(),
            b"not really onnxruntime\n"
        );
        let config: Value =
            serde_json::from_slice(&std::fs::read(dir.join("worker.json")).unwrap()).unwrap();
        assert_eq!(config["worker_id"], format!("w{i}"));
        assert_eq!(config["kafka"]["brokers"], "127.0.0.1:9092");
        assert_eq!(config["training"]["local_epochs"], 2);
        // The run key deploy made (none existed) went along, private.
        let key = dir.join("data/hermes.key");
        assert_eq!(
            std::fs::read(&key).unwrap(),
            std::fs::read(lab.path("data/hermes.key")).unwrap()
        );
        assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        // No temp files left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
    let pids: Vec<i32> = lab
        .servers
        .iter()
        .map(|s| s.worker_pid().expect("pid file"))
        .collect();
    assert!(
        pids.iter().all(|&p| process_alive(p)),
        "workers not running"
    );
    // The worker got its flags and the ORT library path.
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(lab.servers[0].remote_dir.join("worker.log")).unwrap();
    let dir0 = lab.servers[0].remote_dir.display().to_string();
    assert!(
        log.contains(&format!("fake worker starting: --conf {dir0}/worker.json")),
        "{log}"
    );
    assert!(
        log.contains(&format!("ORT_DYLIB_PATH={dir0}/lib/libonnxruntime.so")),
        "{log}"
    );

    // status: both reachable and running, no active run.
    let status = lab.deploy(&cluster, &["status"]);
    assert_eq!(status.code, 0);
    for (i, pid) in pids.iter().enumerate() {
        let row = status.row(&format!("host{i}"));
        assert!(row.contains(&format!("running (pid {pid})")), "{row}");
        assert!(row.contains("no active run"), "{row}");
    }

    // status with a master heartbeat file.
    std::fs::write(
        lab.path("workers-status.json"),
        format!(
            r#"{{"run_id": "run-7", "updated_at_ms": {now}, "workers": {{"w0": {{"last_heartbeat_ms": {now}, "state": "active"}}}}}}"#,
            now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ),
    )
    .unwrap();
    let status = lab.deploy(&cluster, &["status"]);
    assert!(
        status.row("host0").contains("(active), run run-7"),
        "{}",
        status.stdout
    );
    assert!(
        status.row("host1").contains("never (run run-7)"),
        "{}",
        status.stdout
    );

    // A second `up` with nothing changed uploads nothing and keeps the workers.
    let inode_before = std::fs::metadata(lab.servers[0].remote_dir.join("worker"))
        .unwrap()
        .ino();
    let again = lab.deploy(&cluster, &["up"]);
    assert_eq!(again.code, 0);
    for (i, pid) in pids.iter().enumerate() {
        let row = again.row(&format!("host{i}"));
        assert!(
            row.contains("nothing uploaded (4 files unchanged)"),
            "{row}"
        );
        assert!(
            row.contains(&format!("already running (pid {pid})")),
            "{row}"
        );
    }
    let inode_after = std::fs::metadata(lab.servers[0].remote_dir.join("worker"))
        .unwrap()
        .ino();
    assert_eq!(inode_before, inode_after, "the binary was rewritten");

    // A changed override uploads only that host's config and restarts its worker.
    let mut entry = lab.host_entry(1);
    entry["overrides"]["training"]["local_epochs"] = 5.into();
    let cluster = lab.write_cluster(vec![lab.host_entry(0), entry]);
    let changed = lab.deploy(&cluster, &["up"]);
    assert_eq!(changed.code, 0);
    assert!(
        changed.row("host0").contains("nothing uploaded"),
        "{}",
        changed.stdout
    );
    let row1 = changed.row("host1");
    assert!(row1.contains("restarted (pid"), "{row1}");
    assert!(row1.contains("uploaded config"), "{row1}");
    assert!(row1.contains("unchanged worker, onnxruntime"), "{row1}");
    assert!(wait_dead(pids[1]), "old worker on host1 still alive");
    let new_pid1 = lab.servers[1].worker_pid().unwrap();
    assert_ne!(new_pid1, pids[1]);

    // logs: the last lines of each worker's log.
    let logs = lab.deploy(&cluster, &["logs", "-n", "3"]);
    assert_eq!(logs.code, 0);
    assert!(logs.row("host0").contains("3 lines of"), "{}", logs.stdout);
    assert!(
        logs.stdout
            .contains(&format!("ORT_DYLIB_PATH={dir0}/lib/libonnxruntime.so")),
        "{}",
        logs.stdout
    );
    // host1 was restarted: its older lines record the SIGTERM.
    let logs = lab.deploy(&cluster, &["logs", "--hosts", "host1", "-n", "20"]);
    assert_eq!(logs.code, 0);
    assert!(
        logs.stdout.contains("==> host1 (127.0.0.1) <=="),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("fake worker got TERM"),
        "{}",
        logs.stdout
    );

    // stop: both workers exit on SIGTERM; status then says not running.
    let stop = lab.deploy(&cluster, &["stop"]);
    assert_eq!(stop.code, 0);
    assert!(stop
        .row("host0")
        .contains(&format!("stopped (pid {}, SIGTERM)", pids[0])));
    assert!(stop
        .row("host1")
        .contains(&format!("stopped (pid {new_pid1}, SIGTERM)")));
    assert!(
        wait_dead(pids[0]) && wait_dead(new_pid1),
        "workers survived stop"
    );
    let status = lab.deploy(&cluster, &["status"]);
    assert!(
        status.row("host0").contains("not running"),
        "{}",
        status.stdout
    );
    let stop_again = lab.deploy(&cluster, &["stop", "--hosts", "host1"]);
    assert_eq!(stop_again.code, 0);
    assert!(stop_again.row("host1").contains("was not running"));
    assert!(
        !stop_again.stdout.contains("host0 "),
        "{}",
        stop_again.stdout
    );
}

#[test]
fn changed_host_key_is_refused_and_nothing_uploaded_there() {
    let lab = Lab::new(2);
    // host0 is trusted; host1 is recorded with some other key.
    keygen(&lab.path("impostor"));
    let impostor = std::fs::read_to_string(lab.path("impostor.pub")).unwrap();
    let mut parts = impostor.split_whitespace();
    let (kind, key) = (parts.next().unwrap(), parts.next().unwrap());
    std::fs::write(
        lab.known_hosts(),
        format!(
            "{}\n[127.0.0.1]:{} {kind} {key}\n",
            lab.servers[0].known_hosts_line(),
            lab.servers[1].port
        ),
    )
    .unwrap();
    let known_before = std::fs::read_to_string(lab.known_hosts()).unwrap();
    let cluster = lab.write_cluster(vec![lab.host_entry(0), lab.host_entry(1)]);

    // Even --accept-new never accepts a changed key.
    let up = lab.deploy(&cluster, &["--accept-new", "up"]);
    assert_eq!(up.code, 1);
    assert!(up.row("host0").contains("started (pid"), "{}", up.stdout);
    let row = up.row("host1");
    assert!(row.contains("FAILED"), "{row}");
    assert!(row.contains("HOST KEY MISMATCH"), "{row}");
    assert!(
        up.stderr.contains("HOST KEY MISMATCH")
            || up.stdout.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
    );
    assert!(
        !lab.servers[1].remote_dir.exists(),
        "something was uploaded to the host with the wrong key"
    );
    assert_eq!(
        std::fs::read_to_string(lab.known_hosts()).unwrap(),
        known_before
    );
    assert!(
        up.stdout.contains("1 of 2 hosts ok, 1 failed"),
        "{}",
        up.stdout
    );
    // sshd never saw a login on host1.
    assert!(
        !lab.servers[1]
            .log()
            .iter()
            .any(|l| l.contains("Accepted publickey")),
        "authenticated to a host with a mismatching key"
    );

    let stop = lab.deploy(&cluster, &["stop", "--hosts", "host0"]);
    assert_eq!(stop.code, 0);
}

#[test]
fn unknown_host_is_refused_without_accept_new() {
    let lab = Lab::new(1);
    let cluster = lab.write_cluster(vec![lab.host_entry(0)]);
    let up = lab.deploy(&cluster, &["up"]);
    assert_eq!(up.code, 1);
    let row = up.row("host0");
    assert!(
        row.contains("host key not verified") && row.contains("--accept-new"),
        "{row}"
    );
    assert!(!lab.servers[0].remote_dir.exists());
    assert!(
        !lab.known_hosts().exists()
            || std::fs::read_to_string(lab.known_hosts())
                .unwrap()
                .is_empty()
    );
}

#[test]
fn unreachable_host_is_reported_while_the_other_succeeds() {
    let lab = Lab::new(1);
    lab.trust(&[0]);
    let closed = free_port();
    let ghost_dir = lab.path("ghost");
    let cluster = lab.write_cluster(vec![
        lab.entry("ghost", closed, &ghost_dir, "w-ghost"),
        lab.host_entry(0),
        lab.entry("nowhere", 22, &ghost_dir, "w-nowhere"),
    ]);
    let mut cluster_json: Value =
        serde_json::from_slice(&std::fs::read(&cluster).unwrap()).unwrap();
    cluster_json["hosts"][2]["address"] = "no-such-host.invalid".into();
    std::fs::write(&cluster, serde_json::to_vec(&cluster_json).unwrap()).unwrap();

    let up = lab.deploy(&cluster, &["up"]);
    assert_eq!(up.code, 1);
    let ghost = up.row("ghost");
    assert!(
        ghost.contains("FAILED") && ghost.contains("connection refused"),
        "{ghost}"
    );
    let nowhere = up.row("nowhere");
    assert!(nowhere.contains("DNS failure"), "{nowhere}");
    assert!(up.row("host0").contains("started (pid"), "{}", up.stdout);
    let pid = lab.servers[0].worker_pid().unwrap();
    assert!(process_alive(pid));

    let status = lab.deploy(&cluster, &["status"]);
    assert_eq!(status.code, 1);
    assert!(
        status.row("ghost").contains("no: connection refused"),
        "{}",
        status.stdout
    );
    assert!(status
        .row("host0")
        .contains(&format!("running (pid {pid})")));

    let stop = lab.deploy(&cluster, &["stop", "--hosts", "host0"]);
    assert_eq!(stop.code, 0);
    assert!(wait_dead(pid));
}

#[test]
fn binary_for_another_architecture_is_refused() {
    let lab = Lab::new(1);
    lab.trust(&[0]);
    // A 64-bit little-endian ELF header for aarch64 (e_machine 183).
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend_from_slice(&2u16.to_le_bytes());
    elf.extend_from_slice(&183u16.to_le_bytes());
    elf.extend_from_slice(&[0; 60]);
    std::fs::write(lab.path("worker-aarch64"), elf).unwrap();
    let cluster = lab.write_cluster_with(
        vec![lab.host_entry(0)],
        lab.path("worker-aarch64"),
        lab.path("libonnxruntime.so"),
    );
    let up = lab.deploy(&cluster, &["up"]);
    let arch = std::process::Command::new("uname")
        .arg("-m")
        .output()
        .unwrap();
    if String::from_utf8_lossy(&arch.stdout).trim() == "aarch64" {
        return; // The test machine itself is aarch64: nothing to refuse.
    }
    assert_eq!(up.code, 1);
    let row = up.row("host0");
    assert!(
        row.contains("exec format error") && row.contains("aarch64"),
        "{row}"
    );
    assert!(lab.servers[0].worker_pid().is_none());
}

#[test]
fn inventory_with_password_is_rejected() {
    let lab = Lab::new(0);
    let mut entry = lab.entry("pi", 22, &lab.path("r"), "w1");
    entry["password"] = "hunter2".into();
    let cluster = lab.write_cluster(vec![entry]);
    let run = lab.deploy(&cluster, &["status"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("hosts[0].password"), "{}", run.stderr);
    assert!(
        run.stderr.contains("passwords are not allowed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("HERMES_SSH_PASSWORD_"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--ask-password"), "{}", run.stderr);
    assert!(!run.stderr.contains("hunter2"), "the password was echoed");
}

/// Unmounts a tmpfs on drop.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_remote_disk_is_reported() {
    let lab = Lab::new(1);
    lab.trust(&[0]);
    // The remote directory is a 256 KiB tmpfs; the "binary" is 1 MiB.
    let remote_dir = lab.servers[0].remote_dir.clone();
    std::fs::create_dir_all(&remote_dir).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&remote_dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _mount = Mount(remote_dir.clone());
    let mut big = support::FAKE_WORKER.as_bytes().to_vec();
    big.extend(std::iter::repeat_n(b'#', 1024 * 1024));
    std::fs::write(lab.path("big-worker.sh"), big).unwrap();
    let cluster = lab.write_cluster_with(
        vec![lab.host_entry(0)],
        lab.path("big-worker.sh"),
        lab.path("libonnxruntime.so"),
    );
    let up = lab.deploy(&cluster, &["up"]);
    assert_eq!(up.code, 1);
    let row = up.row("host0");
    assert!(row.contains("remote disk full"), "{row}");
    assert!(row.contains("uploading the worker"), "{row}");
    // The partial temp file was removed and nothing was started.
    let leftovers: Vec<_> = std::fs::read_dir(&remote_dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "lib")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(lab.servers[0].worker_pid().is_none());
}

#[test]
fn key_passphrase_comes_from_the_environment() {
    let lab = Lab::new(1);
    lab.trust(&[0]);
    // A second, passphrase-protected user key, also authorized.
    let locked = lab.path("id_locked");
    support::sshd::run(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "s3cret phrase", "-f"])
            .arg(&locked),
    );
    let public = std::fs::read_to_string(lab.path("id_locked.pub")).unwrap();
    let mut authorized = std::fs::OpenOptions::new()
        .append(true)
        .open(&lab.key.public)
        .unwrap();
    std::io::Write::write_all(&mut authorized, public.as_bytes()).unwrap();
    let mut entry = lab.host_entry(0);
    entry["auth"] = serde_json::json!({ "key": locked });
    let cluster = lab.write_cluster(vec![entry]);

    let without = lab.deploy(&cluster, &["status"]);
    assert_eq!(without.code, 1);
    let row = without.row("host0");
    assert!(row.contains("authentication failed"), "{row}");
    assert!(row.contains("HERMES_SSH_PASSWORD_HOST0"), "{row}");

    let with = lab.deploy_env(
        &cluster,
        &["status"],
        &[("HERMES_SSH_PASSWORD_HOST0", "s3cret phrase")],
    );
    assert_eq!(with.code, 0, "{}", with.stdout);
    assert!(with.row("host0").contains("not running"));
}

/// An ssh-agent of this test, killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agent_auth_uses_the_agents_identities() {
    let lab = Lab::new(1);
    lab.trust(&[0]);
    let socket = lab.path("agent.sock");
    let agent = Agent(
        std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start ssh-agent"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut entry = lab.host_entry(0);
    entry["auth"] = "agent".into();
    let cluster = lab.write_cluster(vec![entry]);
    let sock = socket.display().to_string();

    // An empty agent: a clear message.
    let empty = lab.deploy_env(&cluster, &["status"], &[("SSH_AUTH_SOCK", &sock)]);
    assert_eq!(empty.code, 1);
    assert!(
        empty.row("host0").contains("holds no identities"),
        "{}",
        empty.stdout
    );

    // A non-matching identity first, then the right one: both are tried.
    keygen(&lab.path("id_other"));
    for key in [lab.path("id_other"), lab.key.private.clone()] {
        support::sshd::run(
            std::process::Command::new("ssh-add")
                .arg("-q")
                .arg(&key)
                .env("SSH_AUTH_SOCK", &socket),
        );
    }
    let ok = lab.deploy_env(&cluster, &["status"], &[("SSH_AUTH_SOCK", &sock)]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
    assert!(ok.row("host0").contains("yes"));
    drop(agent);
}
