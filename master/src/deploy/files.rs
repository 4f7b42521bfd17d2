//! What `deploy up` places on each host, read (or built) once and shared by
//! the host threads: the worker binary, the ONNX Runtime library, the
//! generated worker config and the run key.
//!
//! The binary is the inventory's `binary` (or a host's own), else a release
//! build of this workspace made with cargo before any host is contacted; a
//! host whose architecture differs gets a cross-build for its triple, made
//! once for all such hosts.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail};

use super::build::{self, Built};
use super::inventory::{self, Cluster, Host};
use super::remote::Layout;
use super::upload::{FileSpec, LocalFile};
use super::workerconf;

type Shared = Result<Arc<LocalFile>, String>;
/// A cross-build for one target triple, or why it failed.
type CrossBuild = Result<(Built, Arc<LocalFile>), String>;

/// The local files of `up`.
pub struct UploadSet {
    binaries: HashMap<PathBuf, Shared>,
    ort_libs: HashMap<PathBuf, Shared>,
    configs: HashMap<String, Shared>,
    /// Hosts that get the run key (their config neither is insecure nor
    /// names its own key file).
    keyed_hosts: HashSet<String>,
    /// The run key as a key file's content, when any host needs it.
    key: Option<Shared>,
    /// The inventory-wide binary; `None` when it is to be built.
    default_binary: Option<PathBuf>,
    /// The local release build, when the default binary is built.
    built: Option<(Built, Shared)>,
    /// Cross-builds by target triple, made when a host needs one.
    cross: Mutex<HashMap<String, CrossBuild>>,
    default_ort: PathBuf,
}

/// The worker binary chosen for one host.
pub struct WorkerBinary {
    /// Its content.
    pub file: Arc<LocalFile>,
    /// How it was made, for the results table (`None` = named in the inventory).
    pub built: Option<String>,
}

impl UploadSet {
    /// Reads every file the selected hosts need; builds the release worker
    /// when the inventory names no binary.
    pub fn prepare(
        cluster: &Cluster,
        hosts: &[&Host],
        brokers: Option<&str>,
    ) -> anyhow::Result<Self> {
        let base = workerconf::load_base(&cluster.worker_config_path())?;
        let brokers = brokers.or(cluster.brokers.as_deref());
        let needs_default = hosts.iter().any(|h| h.binary.is_none());
        let built = match (&cluster.binary, needs_default) {
            (None, true) => {
                eprintln!("building the release worker (cargo build --release -p worker) ...");
                let b = build::release_worker(None)?;
                eprintln!("  {}: {}", b.describe(), b.path.display());
                let file = read_shared(&b.path, "release worker binary");
                Some((b, file))
            }
            _ => None,
        };
        let mut set = Self {
            binaries: HashMap::new(),
            ort_libs: HashMap::new(),
            configs: HashMap::new(),
            keyed_hosts: HashSet::new(),
            key: None,
            default_binary: cluster.binary.clone(),
            built,
            cross: Mutex::new(HashMap::new()),
            default_ort: cluster.ort_lib.clone(),
        };
        for host in hosts {
            if let Some(binary) = host.binary.as_ref().or(cluster.binary.as_ref()) {
                let binary = inventory::expand_home(binary);
                set.binaries
                    .entry(binary.clone())
                    .or_insert_with(|| read_shared(&binary, "worker binary"));
            }
            let ort = inventory::expand_home(host.ort_lib.as_ref().unwrap_or(&cluster.ort_lib));
            set.ort_libs.entry(ort.clone()).or_insert_with(|| {
                read_shared(&ort, "ONNX Runtime library (run deploy/ort/install.sh)")
            });
            let generated = workerconf::generate(
                &base,
                &host.worker_id,
                brokers,
                cluster.run_id.as_deref(),
                &[&cluster.overrides, &host.overrides],
            );
            if let Ok(v) = &generated {
                if workerconf::wants_run_key(v) {
                    set.keyed_hosts.insert(host.name.clone());
                }
            }
            let config = generated
                .and_then(|v| Ok(serde_json::to_vec_pretty(&v)?))
                .map(|bytes| Arc::new(LocalFile::from_bytes(bytes)))
                .map_err(|e| format!("cannot generate the worker config: {e:#}"));
            set.configs.insert(host.name.clone(), config);
        }
        if !set.keyed_hosts.is_empty() {
            set.key = Some(run_key_file(cluster));
        }
        Ok(set)
    }

    /// The worker binary for `host`, whose `uname -m` is `machine`: its own
    /// or the inventory's, else the release build, cross-built when the
    /// host's architecture differs from the build's.
    pub fn binary_for(&self, host: &Host, machine: &str) -> anyhow::Result<WorkerBinary> {
        if let Some(path) = host.binary.as_ref().or(self.default_binary.as_ref()) {
            let file = lookup(&self.binaries, &inventory::expand_home(path))?;
            super::arch::check(&file.content, machine)?;
            return Ok(WorkerBinary { file, built: None });
        }
        let Some((built, file)) = &self.built else {
            bail!("internal: no release worker prepared");
        };
        let file = file.clone().map_err(|e| anyhow!("{e}"))?;
        if super::arch::check(&file.content, machine).is_ok() {
            return Ok(WorkerBinary {
                file,
                built: Some(built.describe()),
            });
        }
        let triple = build::linux_triple(machine).ok_or_else(|| {
            anyhow!(
                "the host is a `{}` machine, for which no Rust target is known; build the worker \
                 for it and set `binary` for this host",
                machine.trim()
            )
        })?;
        let mut cross = match self.cross.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let entry = cross.entry(triple.to_string()).or_insert_with(|| {
            build::release_worker(Some(triple))
                .map_err(|e| format!("{e:#}"))
                .and_then(|b| {
                    LocalFile::read(&b.path, "cross-built worker binary")
                        .map(|f| (b, Arc::new(f)))
                        .map_err(|e| format!("{e:#}"))
                })
        });
        match entry {
            Ok((b, f)) => {
                super::arch::check(&f.content, machine)?;
                Ok(WorkerBinary {
                    file: f.clone(),
                    built: Some(b.describe()),
                })
            }
            Err(e) => bail!("{e}"),
        }
    }

    /// The files for `host` besides the binary (library, config, run key).
    pub fn files_for(&self, host: &Host, layout: &Layout) -> anyhow::Result<Vec<FileSpec>> {
        let ort = inventory::expand_home(host.ort_lib.as_ref().unwrap_or(&self.default_ort));
        let config = match self.configs.get(&host.name) {
            Some(Ok(file)) => file.clone(),
            Some(Err(e)) => bail!("{e}"),
            None => bail!("internal: config of {} not prepared", host.name),
        };
        let mut files = vec![
            FileSpec {
                label: "onnxruntime",
                local: lookup(&self.ort_libs, &ort)?,
                remote: layout.ort_lib(),
                mode: 0o644,
            },
            FileSpec {
                label: "config",
                local: config,
                remote: layout.config(),
                mode: 0o644,
            },
        ];
        if self.keyed_hosts.contains(&host.name) {
            let key = match &self.key {
                Some(Ok(file)) => file.clone(),
                Some(Err(e)) => bail!("{e}"),
                None => bail!("internal: run key not prepared"),
            };
            files.push(FileSpec {
                label: "run key",
                local: key,
                remote: layout.key(),
                mode: 0o600,
            });
        }
        Ok(files)
    }
}

/// Where each host's worker writes its state file (relative to its remote
/// directory unless absolute), from the config `up` generates for it; hosts
/// whose config cannot be generated are left out.
pub fn state_files(cluster: &Cluster, hosts: &[&Host]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let base = workerconf::load_base(&cluster.worker_config_path())?;
    Ok(hosts
        .iter()
        .filter_map(|host| {
            workerconf::generate(
                &base,
                &host.worker_id,
                None,
                cluster.run_id.as_deref(),
                &[&cluster.overrides, &host.overrides],
            )
            .ok()
            .map(|v| (host.name.clone(), workerconf::state_file(&v)))
        })
        .collect())
}

fn lookup(map: &HashMap<PathBuf, Shared>, key: &Path) -> anyhow::Result<Arc<LocalFile>> {
    match map.get(key) {
        Some(Ok(file)) => Ok(file.clone()),
        Some(Err(e)) => Err(anyhow!("{e}")),
        None => Err(anyhow!("internal: {} not prepared", key.display())),
    }
}

/// The run key the workers get (see [`inventory::Cluster::key_file`]).
fn run_key_file(cluster: &Cluster) -> Shared {
    let cfg = common::config::KafkaConfig {
        hmac_key_file: cluster.key_file.clone(),
        ..Default::default()
    };
    common::runkey::resolve(
        &cfg,
        Path::new(common::runkey::DEFAULT_KEY_FILE),
        common::runkey::WhenMissing::Create,
    )
    .map_err(|e| format!("the run key for the workers: {e}"))
    .and_then(|keys| keys.current.ok_or_else(|| "no run key".to_string()))
    .map(|key| Arc::new(LocalFile::from_bytes(key.to_hex().into_bytes())))
}

fn read_shared(path: &Path, what: &str) -> Shared {
    LocalFile::read(path, what)
        .map(Arc::new)
        .map_err(|e| format!("{e:#}"))
}
