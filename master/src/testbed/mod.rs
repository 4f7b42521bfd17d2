//! `master testbed`: an emulated edge cluster on one machine (EdgeTB + ROG).
//!
//! * [`profile`] — the profile file: nodes, links, caps, traces, broker, workers.
//! * [`rate`] — link rates as tc writes them (and EdgeTB's byte rates).
//! * [`net`] — bridge, namespaces, veth pairs, htb shaping, tc counters.
//! * [`cgroup`] — CPU and memory caps per node (cgroup v1 or v2).
//! * [`trace`] — bandwidth traces: parsing, a seeded synthetic wireless model, replay schedule, recording.
//! * [`replay`] — applying traces to the links, logged.
//! * [`state`] — the crash-safe record of what was made.
//! * [`broker`] — the Kafka broker on the bridge address.
//! * [`spawn`] — processes inside a node (its namespace and cgroups).
//! * [`lifecycle`] — `up` and `down`.
//! * [`control`] — `status` and `set`.

pub mod broker;
pub mod cgroup;
pub mod control;
pub mod lifecycle;
pub mod net;
pub mod profile;
pub mod rate;
pub mod replay;
pub mod spawn;
pub mod state;
pub mod trace;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

pub use profile::Profile;
pub use state::TestbedState;

/// `master testbed ...`
#[derive(Args, Debug)]
pub struct TestbedArgs {
    /// The testbed profile (default `conf/testbed.json`).
    #[arg(long, global = true)]
    pub conf: Option<PathBuf>,
    /// Folder of the testbeds' state files.
    #[arg(long, default_value = state::DEFAULT_STATE_DIR, global = true)]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    command: TestbedCommand,
}

#[derive(Subcommand, Debug)]
enum TestbedCommand {
    /// Make the namespaces, links, caps and broker of a profile (and start
    /// its workers and trace replay).
    Up {
        /// Start a worker in every node, whatever the profile says.
        #[arg(long)]
        workers: bool,
        /// Run id the workers join (default: the profile's `workers.run_id`).
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Remove everything the testbed made (also after a crash).
    Down {
        /// The testbed's name, when the profile file is gone.
        #[arg(long)]
        name: Option<String>,
    },
    /// Nodes, links (configured and in force), caps, processes.
    Status,
    /// Change a node's link or caps live.
    Set(control::SetArgs),
    /// Apply the profile's traces to the links (started by `up`).
    #[command(hide = true)]
    Replay {
        /// Testbed name.
        #[arg(long)]
        name: String,
    },
    /// Bandwidth traces: make a synthetic one, or record an interface.
    #[command(subcommand)]
    Trace(TraceCommand),
}

#[derive(Subcommand, Debug)]
enum TraceCommand {
    /// Write a trace from the seeded synthetic wireless-link model.
    Synth(trace::SynthArgs),
    /// Sample an interface's real throughput into a trace file.
    Record(trace::RecordArgs),
}

/// Runs `master testbed ...` with the profile at `conf`.
pub fn run(args: TestbedArgs, conf: &Path) -> anyhow::Result<std::process::ExitCode> {
    let dir = &args.state_dir;
    match args.command {
        TestbedCommand::Trace(TraceCommand::Synth(a)) => trace::run_synth(&a)?,
        TestbedCommand::Trace(TraceCommand::Record(a)) => trace::run_record(&a)?,
        TestbedCommand::Up { workers, run_id } => {
            let profile = Profile::load(conf)?;
            let opts = lifecycle::UpOptions {
                start_workers: workers.then_some(true),
                run_id,
                work_dir: None,
                detached_replay: true,
            };
            let state = lifecycle::up(conf, &profile, dir, &opts)?;
            println!("{}", control::status_table(&state));
            if let Some(b) = state.bootstrap() {
                println!(
                    "broker: {b}\nrun the master on the host with:\n  HERMES_KAFKA__BROKERS={b} HERMES_RUN_ID={} cargo run -p master -- --conf conf/master.json",
                    profile.workers.run_id
                );
            }
        }
        TestbedCommand::Down { name } => {
            let name = match name {
                Some(n) => n,
                None => Profile::load(conf)?.name,
            };
            let r = lifecycle::down(dir, &name)?;
            println!(
                "testbed {name} down: {} process(es) stopped, {} namespace(s), bridge {}, {} cgroup dir(s) removed{}",
                r.processes,
                r.namespaces,
                if r.bridge { "removed" } else { "absent" },
                r.cgroups,
                if r.had_state { "" } else { " (there was no state file)" }
            );
            if !r.errors.is_empty() {
                anyhow::bail!("some things could not be removed: {}", r.errors.join("; "));
            }
        }
        TestbedCommand::Status => {
            let name = Profile::load(conf)?.name;
            match TestbedState::load(dir, &name)? {
                Some(state) => println!("{}", control::status_table(&state)),
                None => {
                    println!("testbed {name} is down");
                    return Ok(std::process::ExitCode::from(3));
                }
            }
        }
        TestbedCommand::Set(a) => {
            let name = Profile::load(conf)?.name;
            control::set(dir, &name, &a)?;
        }
        TestbedCommand::Replay { name } => replay::run_detached(dir, &name)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}
