//! Real OpenSSH servers for the deploy tests.
//!
//! Each [`SshServer`] is Debian's `/usr/sbin/sshd`, started as this test's own
//! child process (`sshd -D -e -f <generated config>`) on a free loopback
//! port, with a freshly generated ed25519 host key, key-only login for the
//! current user through a generated user key, and its pid file in a temp
//! directory. The system's sshd configuration is never touched. Dropping the
//! server kills any worker started in its remote directory, then sshd itself.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Path of the OpenSSH daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

/// Runs a command and panics with its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates an ed25519 key pair without passphrase at `path` (+ `.pub`).
pub fn keygen(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "hermes-test", "-f"])
        .arg(path));
}

/// The login name of the current user.
pub fn current_user() -> String {
    run(Command::new("id").arg("-un")).trim().to_string()
}

/// A user key shared by all servers of a test.
pub struct UserKey {
    /// Private key file.
    pub private: PathBuf,
    /// Public key file.
    pub public: PathBuf,
}

impl UserKey {
    /// Generates a key in `dir`.
    pub fn generate(dir: &Path) -> Self {
        let private = dir.join("id_user");
        keygen(&private);
        Self {
            public: dir.join("id_user.pub"),
            private,
        }
    }
}

/// One running sshd.
pub struct SshServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Directory of its config, host key and pid file.
    pub dir: PathBuf,
    /// Public host key line (`ssh-ed25519 AAAA... comment`).
    pub host_key_pub: String,
    /// Remote directory the tests deploy into (inside `dir`, not created).
    pub remote_dir: PathBuf,
    child: Child,
    log: mpsc::Receiver<String>,
}

impl SshServer {
    /// Starts an sshd with its files under `dir` (created), accepting `key`.
    pub fn start(dir: &Path, key: &UserKey) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install Debian's openssh-server (apt-get install openssh-server)"
        );
        std::fs::create_dir_all(dir).expect("create sshd dir");
        // Privilege separation directory required by Debian's sshd.
        let _ = std::fs::create_dir_all("/run/sshd");
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(&host_key);
        let host_key_pub = std::fs::read_to_string(dir.join("ssh_host_ed25519_key.pub"))
            .expect("read host key")
            .trim()
            .to_string();
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(&config, sshd_config(dir, &host_key, key, port))
                .expect("write sshd_config");
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn sshd");
            let (tx, rx) = mpsc::channel();
            let stderr = child.stderr.take().expect("sshd stderr");
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            match wait_listening(&mut child, &rx, port) {
                Ok(()) => {
                    return Self {
                        port,
                        remote_dir: dir.join("remote"),
                        dir: dir.to_path_buf(),
                        host_key_pub,
                        child,
                        log: rx,
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = e;
                }
            }
        }
        panic!("sshd did not start: {last_err}");
    }

    /// The `known_hosts` line for this server.
    pub fn known_hosts_line(&self) -> String {
        let mut parts = self.host_key_pub.split_whitespace();
        let kind = parts.next().unwrap_or_default();
        let key = parts.next().unwrap_or_default();
        format!("[127.0.0.1]:{} {kind} {key}", self.port)
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// The pid recorded in the remote directory's pid file, if any.
    pub fn worker_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.remote_dir.join("worker.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        if let Some(pid) = self.worker_pid() {
            // Kill the worker's process group (it is a session leader), then the pid.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

fn sshd_config(dir: &Path, host_key: &Path, key: &UserKey, port: u16) -> String {
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {host_key}\n\
         PidFile {pid}\n\
         AuthorizedKeysFile {authorized}\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AllowAgentForwarding no\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         MaxStartups 50\n\
         Subsystem sftp internal-sftp\n",
        host_key = host_key.display(),
        pid = dir.join("sshd.pid").display(),
        authorized = key.public.display(),
    )
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn wait_listening(
    child: &mut Child,
    log: &mpsc::Receiver<String>,
    port: u16,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        lines.extend(log.try_iter());
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("sshd exited with {status}: {}", lines.join(" | ")));
        }
        if lines.iter().any(|l| l.contains("Server listening"))
            && TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "sshd not listening on {port} after 10 s: {}",
        lines.join(" | ")
    ))
}
