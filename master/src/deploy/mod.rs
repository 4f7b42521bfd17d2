//! `master deploy`: bootstrap, inspect and stop remote workers over SSH.
//!
//! Every selected host is handled on its own thread with its own progress
//! bar; one host failing never stops the others. A results table is printed
//! at the end and the exit code is non-zero when any host failed.
//!
//! Module map: [`arch`] (wrong-CPU check), [`inventory`] (the `cluster.json` file), [`hostkey`]
//! (known_hosts checks), [`session`] (connect, authenticate, run commands),
//! [`build`] (the release worker, built or cross-built on demand), [`files`]
//! (what `up` ships, read once), [`upload`] (checksum-aware atomic SFTP
//! upload, gzip in transit), [`remote`] (the worker process on the host),
//! [`workerconf`] (per-host worker config), [`report`] (results table,
//! master heartbeat file).

pub mod arch;
pub mod build;
pub mod files;
pub mod hostkey;
pub mod inventory;
pub mod remote;
pub mod report;
pub mod session;
pub mod upload;
pub mod workerconf;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use files::UploadSet;
use hostkey::{KnownHostsFile, Verified};
use inventory::{Auth, Host, WorkerMode};
use remote::{Layout, Stopped};
use session::{Remote, Timeouts};
use upload::{FileSpec, Outcome};

/// Arguments of `master deploy`.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// The SSH inventory.
    #[arg(long, default_value = "conf/cluster.json", global = true)]
    pub cluster: PathBuf,
    /// known_hosts file used to verify host keys (default: ~/.ssh/known_hosts).
    #[arg(long, global = true, value_name = "PATH")]
    pub known_hosts: Option<PathBuf>,
    /// Record the key of a host missing from known_hosts instead of refusing it.
    /// A key that differs from the recorded one is refused regardless.
    #[arg(long, global = true)]
    pub accept_new: bool,
    /// Only these hosts (comma-separated names from the inventory).
    #[arg(long, global = true, value_delimiter = ',', value_name = "NAMES")]
    pub hosts: Vec<String>,
    /// Seconds allowed for TCP connect, SSH handshake and authentication.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECONDS")]
    pub connect_timeout: f64,
    /// Seconds allowed for every remote command and SFTP operation.
    #[arg(long, global = true, default_value_t = 60.0, value_name = "SECONDS")]
    pub command_timeout: f64,
    /// Seconds `stop` waits after SIGTERM before sending SIGKILL.
    #[arg(long, global = true, default_value_t = 10.0, value_name = "SECONDS")]
    pub stop_timeout: f64,
    /// Seconds `up` waits after starting a worker before checking it still runs.
    #[arg(long, global = true, default_value_t = 1.5, value_name = "SECONDS")]
    pub startup_check: f64,
    /// Kafka bootstrap servers as the workers see them (overrides the inventory's `brokers`).
    #[arg(long, global = true, value_name = "HOST:PORT,...")]
    pub brokers: Option<String>,
    /// Prompt for the password of hosts with `"auth": "password"` whose
    /// HERMES_SSH_PASSWORD_<HOST> variable is not set.
    #[arg(long, global = true)]
    pub ask_password: bool,
    /// The master's worker status file, read by `status` for heartbeats.
    #[arg(long, global = true, default_value = report::DEFAULT_STATUS_FILE, value_name = "PATH")]
    pub status_file: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The `deploy` actions.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Upload the worker, its config and the ONNX Runtime library, then start the worker.
    Up,
    /// Show per host: reachable, worker running, last heartbeat seen by the master.
    Status,
    /// Stop the worker (SIGTERM, then SIGKILL after --stop-timeout).
    Stop,
    /// Print the last lines of each worker's log.
    Logs {
        /// Number of lines.
        #[arg(short = 'n', long = "lines", default_value_t = 50)]
        lines: usize,
    },
}

/// Runs `master deploy`.
pub fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let cluster = inventory::load(&args.cluster)?;
    let hosts = inventory::select(&cluster, &args.hosts)?;
    let timeouts = Timeouts {
        connect: seconds("--connect-timeout", args.connect_timeout)?,
        command: seconds("--command-timeout", args.command_timeout)?,
    };
    let known_hosts_path = match &args.known_hosts {
        Some(path) => path.clone(),
        None => default_known_hosts()?,
    };
    let ctx = Ctx {
        action: args.action,
        known_hosts: KnownHostsFile::new(known_hosts_path, args.accept_new),
        timeouts,
        stop_grace: seconds("--stop-timeout", args.stop_timeout)?,
        startup_check: seconds("--startup-check", args.startup_check)?,
        passwords: collect_passwords(&hosts, args.ask_password)?,
        upload: match args.action {
            Action::Up => Some(UploadSet::prepare(
                &cluster,
                &hosts,
                args.brokers.as_deref(),
            )?),
            _ => None,
        },
        status: match args.action {
            Action::Status => report::read_status_file(&args.status_file)?,
            _ => None,
        },
        state_files: match args.action {
            Action::Status => files::state_files(&cluster, &hosts)?,
            _ => HashMap::new(),
        },
        mode: cluster.mode,
    };

    let progress = MultiProgress::new();
    let results: Vec<HostResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = hosts
            .iter()
            .map(|host| {
                let bar = progress.add(host_bar(host));
                let ctx = &ctx;
                scope.spawn(move || run_host(ctx, host, &bar))
            })
            .collect();
        handles
            .into_iter()
            .zip(&hosts)
            .map(|(handle, host)| {
                handle.join().unwrap_or_else(|_| HostResult {
                    ok: false,
                    cells: vec![
                        "FAILED".into(),
                        "internal error: host thread panicked".into(),
                    ],
                    text: None,
                    host: (*host).clone(),
                })
            })
            .collect()
    });
    let _ = progress.clear();
    warn_key_mismatches(&results);

    print_results(args.action, &results);
    if results.iter().all(|r| r.ok) {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(1))
    }
}

/// Everything the host threads share.
struct Ctx {
    action: Action,
    known_hosts: KnownHostsFile,
    timeouts: Timeouts,
    stop_grace: Duration,
    startup_check: Duration,
    passwords: HashMap<String, String>,
    upload: Option<UploadSet>,
    status: Option<report::WorkerStatusFile>,
    /// Per host name: its worker's state file (for `status`).
    state_files: HashMap<String, PathBuf>,
    /// How the workers run.
    mode: WorkerMode,
}

/// The outcome for one host.
struct HostResult {
    host: Host,
    ok: bool,
    /// Table cells after HOST and ADDRESS.
    cells: Vec<String>,
    /// Longer text printed before the table (`logs`).
    text: Option<String>,
}

fn default_known_hosts() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("HOME is not set; pass --known-hosts PATH"))?;
    Ok(PathBuf::from(home).join(".ssh").join("known_hosts"))
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || value <= 0.0 || value > 86_400.0 {
        bail!("{flag}: {value} is not a number of seconds in (0, 86400]");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Passwords (or key passphrases) per host name: from
/// `HERMES_SSH_PASSWORD_<HOST>`, else prompted for `"auth": "password"` hosts
/// when `--ask-password` is given.
fn collect_passwords(hosts: &[&Host], ask: bool) -> anyhow::Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for host in hosts {
        let var = inventory::password_env_var(&host.name);
        if let Ok(password) = std::env::var(&var) {
            out.insert(host.name.clone(), password);
        } else if ask && host.auth == Auth::Password {
            let password = rpassword::prompt_password(format!(
                "Password for {}@{} ({}): ",
                host.user, host.address, host.name
            ))
            .context("cannot read the password from the terminal")?;
            out.insert(host.name.clone(), password);
        }
    }
    Ok(out)
}

fn host_bar(host: &Host) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_prefix(host.name.clone());
    bar.set_style(spinner_style());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar.set_message("waiting");
    bar
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14.bold} {spinner} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>14.bold} [{bar:30}] {bytes:>10}/{total_bytes:<10} {wide_msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Does the action on one host; never panics on remote input.
fn run_host(ctx: &Ctx, host: &Host, bar: &ProgressBar) -> HostResult {
    let outcome = match ctx.action {
        Action::Up => host_up(ctx, host, bar),
        Action::Status => host_status(ctx, host, bar),
        Action::Stop => host_stop(ctx, host, bar),
        Action::Logs { lines } => host_logs(ctx, host, bar, lines),
    };
    match outcome {
        Ok(result) => {
            bar.finish_with_message(format!(
                "done: {}",
                result.cells.last().cloned().unwrap_or_default()
            ));
            result
        }
        Err(e) => {
            let message = format!("{e:#}");
            bar.abandon_with_message(format!("FAILED: {message}"));
            let cells = match ctx.action {
                Action::Status => vec![
                    format!("no: {message}"),
                    "unknown".into(),
                    "-".into(),
                    "-".into(),
                ],
                _ => vec!["FAILED".into(), message],
            };
            HostResult {
                host: host.clone(),
                ok: false,
                cells,
                text: None,
            }
        }
    }
}

fn connect(ctx: &Ctx, host: &Host, bar: &ProgressBar) -> anyhow::Result<(Remote, Layout)> {
    bar.set_message(format!("connecting to {}:{}", host.address, host.port));
    let password = ctx.passwords.get(&host.name).map(String::as_str);
    let remote = Remote::connect(host, &ctx.known_hosts, ctx.timeouts, password)?;
    let layout = remote::resolve_dir(&remote, &host.remote_dir)?;
    Ok((remote, layout))
}

fn key_note(remote: &Remote) -> Option<String> {
    match &remote.verified {
        Verified::Known => None,
        Verified::Added { fingerprint } => Some(format!("new host key recorded ({fingerprint})")),
    }
}

fn host_up(ctx: &Ctx, host: &Host, bar: &ProgressBar) -> anyhow::Result<HostResult> {
    let set = ctx
        .upload
        .as_ref()
        .ok_or_else(|| anyhow!("internal: nothing prepared for upload"))?;
    let (remote, layout) = connect(ctx, host, bar)?;
    let uname = remote.exec_ok("uname -m")?;
    bar.set_message(format!("worker binary for {}", uname.trim()));
    let binary = set.binary_for(host, &uname)?;
    let mut files = vec![FileSpec {
        label: "worker",
        local: binary.file.clone(),
        remote: layout.binary(),
        mode: 0o755,
    }];
    files.extend(set.files_for(host, &layout)?);
    bar.set_message(format!("preparing {}", layout.dir.display()));
    upload::ensure_dir(&remote, &layout.lib_dir())?;
    let gzip = upload::remote_has_gzip(&remote);
    let sftp = remote.sftp()?;
    let mut uploaded = Vec::new();
    let mut unchanged = Vec::new();
    let (mut bytes, mut sent) = (0u64, 0u64);
    for spec in &files {
        bar.set_style(bytes_style());
        bar.set_position(0);
        let packed = gzip && spec.local.content.len() >= upload::COMPRESS_FROM;
        bar.set_length(if packed {
            spec.local.gzipped().len() as u64
        } else {
            spec.local.content.len() as u64
        });
        bar.set_message(spec.label);
        if let Some(dir) = spec.remote.parent().filter(|d| *d != layout.dir) {
            upload::ensure_dir(&remote, dir)?;
        }
        let outcome = upload::sync_file(&remote, &sftp, spec, gzip, &mut |n| bar.set_position(n))
            .with_context(|| format!("uploading the {}", spec.label))?;
        match outcome {
            Outcome::Unchanged => unchanged.push(spec.label),
            Outcome::Uploaded { bytes: b, sent: s } => {
                uploaded.push(spec.label);
                bytes += b;
                sent += s;
            }
        }
    }
    drop(sftp);
    bar.set_style(spinner_style());
    bar.set_message("starting worker");
    let running = remote::running_pid(&remote, &layout)?;
    let action = match running {
        Some(pid) if uploaded.is_empty() => format!("already running (pid {pid})"),
        Some(old) => {
            remote::stop(&remote, &layout, ctx.stop_grace)?;
            let pid = remote::start(&remote, &layout, ctx.mode, ctx.startup_check)?;
            format!("restarted (pid {old} -> {pid})")
        }
        None => {
            let pid = remote::start(&remote, &layout, ctx.mode, ctx.startup_check)?;
            format!("started (pid {pid})")
        }
    };
    let mut detail = vec![action];
    detail.push(if uploaded.is_empty() {
        format!("nothing uploaded ({} files unchanged)", unchanged.len())
    } else {
        format!(
            "uploaded {} ({}{}){}",
            uploaded.join(", "),
            human_bytes(bytes),
            if sent < bytes {
                format!(", {} sent gzip", human_bytes(sent))
            } else {
                String::new()
            },
            if unchanged.is_empty() {
                String::new()
            } else {
                format!("; unchanged {}", unchanged.join(", "))
            }
        )
    });
    detail.push(format!(
        "worker {} ({}{})",
        human_bytes(binary.file.content.len() as u64),
        binary.built.as_deref().unwrap_or("the inventory's binary"),
        match ctx.mode {
            WorkerMode::Agent => ", agent",
            WorkerMode::Once => ", one run",
        }
    ));
    detail.extend(key_note(&remote));
    Ok(HostResult {
        host: host.clone(),
        ok: true,
        cells: vec!["ok".into(), detail.join("; ")],
        text: None,
    })
}

fn host_status(ctx: &Ctx, host: &Host, bar: &ProgressBar) -> anyhow::Result<HostResult> {
    let (remote, layout) = connect(ctx, host, bar)?;
    bar.set_message("checking worker");
    let worker = match remote::running_pid(&remote, &layout)? {
        Some(pid) => format!("running (pid {pid})"),
        None => "not running".to_string(),
    };
    let state = ctx
        .state_files
        .get(&host.name)
        .and_then(|f| remote::read_state(&remote, &layout, f));
    let serving = state
        .as_ref()
        .filter(|s| s.state == "serving")
        .and_then(|s| s.run_id.clone());
    let run = match &state {
        Some(s) if s.state == "serving" => s.run_id.clone().unwrap_or_else(|| "?".into()),
        Some(s) => s.state.clone(),
        None => "-".to_string(),
    };
    let heartbeat = report::heartbeat_cell(
        ctx.status.as_ref(),
        &host.worker_id,
        serving.as_deref(),
        report::now_ms(),
    );
    let reachable = match key_note(&remote) {
        Some(note) => format!("yes; {note}"),
        None => "yes".to_string(),
    };
    Ok(HostResult {
        host: host.clone(),
        ok: true,
        cells: vec![reachable, worker, run, heartbeat],
        text: None,
    })
}

fn host_stop(ctx: &Ctx, host: &Host, bar: &ProgressBar) -> anyhow::Result<HostResult> {
    let (remote, layout) = connect(ctx, host, bar)?;
    bar.set_message("stopping worker");
    let detail = match remote::stop(&remote, &layout, ctx.stop_grace)? {
        Stopped::NotRunning => "was not running".to_string(),
        Stopped::Gracefully(pid) => format!("stopped (pid {pid}, SIGTERM)"),
        Stopped::Killed(pid) => format!(
            "killed (pid {pid} ignored SIGTERM for {:?}, sent SIGKILL)",
            ctx.stop_grace
        ),
    };
    Ok(HostResult {
        host: host.clone(),
        ok: true,
        cells: vec!["ok".into(), detail],
        text: None,
    })
}

fn host_logs(
    ctx: &Ctx,
    host: &Host,
    bar: &ProgressBar,
    lines: usize,
) -> anyhow::Result<HostResult> {
    let (remote, layout) = connect(ctx, host, bar)?;
    bar.set_message("reading log");
    let text = remote::tail_log(&remote, &layout, lines)?;
    Ok(HostResult {
        host: host.clone(),
        ok: true,
        cells: vec![
            "ok".into(),
            format!(
                "{} lines of {}",
                text.lines().count(),
                layout.log().display()
            ),
        ],
        text: Some(text),
    })
}

/// Prints an OpenSSH-style banner on stderr for every host whose key changed.
fn warn_key_mismatches(results: &[HostResult]) {
    for result in results.iter().filter(|r| !r.ok) {
        if result
            .cells
            .iter()
            .any(|c| c.contains(hostkey::MISMATCH_MARK))
        {
            eprintln!(
                "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                 @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
                 @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
                 Host {} ({}:{}) offered a key that differs from known_hosts.\n\
                 Nothing was sent to it. See the table below for details.",
                result.host.name, result.host.address, result.host.port
            );
        }
    }
}

fn print_results(action: Action, results: &[HostResult]) {
    for result in results {
        if let Some(text) = &result.text {
            println!("==> {} ({}) <==", result.host.name, result.host.address);
            print!("{text}");
            if !text.is_empty() && !text.ends_with('\n') {
                println!();
            }
            println!();
        }
    }
    let header: &[&str] = match action {
        Action::Status => &[
            "HOST",
            "ADDRESS",
            "REACHABLE",
            "WORKER",
            "RUN",
            "LAST HEARTBEAT",
        ],
        _ => &["HOST", "ADDRESS", "RESULT", "DETAIL"],
    };
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let mut row = vec![
                r.host.name.clone(),
                format!("{}:{}", r.host.address, r.host.port),
            ];
            row.extend(r.cells.iter().cloned());
            row
        })
        .collect();
    print!("{}", report::table(header, &rows));
    let failed = results.iter().filter(|r| !r.ok).count();
    println!(
        "{} of {} hosts ok{}",
        results.len() - failed,
        results.len(),
        if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        }
    );
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 1), "5.0 MiB");
    }

    #[test]
    fn seconds_are_checked() {
        assert!(seconds("--x", 0.0).is_err());
        assert!(seconds("--x", f64::NAN).is_err());
        assert_eq!(seconds("--x", 1.5).unwrap(), Duration::from_millis(1500));
    }
}
