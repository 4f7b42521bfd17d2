//! The SSH inventory (`conf/cluster.json`): which hosts to deploy to and how.
//!
//! The file never holds a password. Any field called `password` (at any depth)
//! is rejected with a message that says where passwords may come from:
//! the environment variable `HERMES_SSH_PASSWORD_<HOST>` or an interactive
//! prompt (`--ask-password`). Unknown fields are rejected too, so a typo never
//! silently falls back to a default.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Default base worker configuration: this file beside the inventory.
pub const DEFAULT_WORKER_CONFIG: &str = "worker.json";
/// Default path of the ONNX Runtime shared library uploaded to every host
/// (relative to the current directory, where `deploy/ort/install.sh` puts it).
pub const DEFAULT_ORT_LIB: &str = "deploy/ort/lib/libonnxruntime.so";

/// The whole inventory file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Kafka bootstrap servers as the workers see them (`host:port,...`).
    /// Optional: `--brokers` overrides it; when both are absent the base
    /// worker config's value is kept.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Base worker configuration (JSON) every host's config is generated
    /// from. Default: `worker.json` beside the inventory file.
    #[serde(default)]
    pub worker_config: Option<PathBuf>,
    /// Worker binary for hosts without their own `binary`. Default: a
    /// release build of this workspace's `worker`, made with cargo on demand
    /// (cross-built for a host of another architecture).
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// Pins every host to this run (`run_id` in each generated config).
    /// Default: none, and the workers take the run id from the master that
    /// opens a run (the way to run several experiments with one deploy).
    #[serde(default)]
    pub run_id: Option<String>,
    /// Fields deep-merged into every host's generated worker config (a
    /// host's own `overrides` go on top).
    #[serde(default = "empty_object")]
    pub overrides: serde_json::Value,
    /// `agent` (default): the workers stay up and serve run after run
    /// (`worker --agent`); `once`: each serves one run and exits.
    #[serde(default)]
    pub mode: WorkerMode,
    /// The run key shipped to the workers (as `data/hermes.key` in each
    /// remote directory, mode 0600). Default: `HERMES_HMAC_KEY_FILE` /
    /// `HERMES_HMAC_KEY`, else the master's `data/hermes.key`, created when
    /// missing. Nothing is shipped to a host whose config sets
    /// `kafka.insecure` or its own `kafka.hmac_key_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// ONNX Runtime library for hosts without their own `ort_lib`.
    #[serde(default = "default_ort_lib")]
    pub ort_lib: PathBuf,
    /// The hosts.
    pub hosts: Vec<Host>,
}

/// One remote host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Short unique name (used in `--hosts`, in tables and in the password
    /// environment variable).
    pub name: String,
    /// DNS name or IP address.
    pub address: String,
    /// SSH port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Login user.
    pub user: String,
    /// How to authenticate.
    pub auth: Auth,
    /// Directory on the host that receives the worker, its config, its
    /// library, its log and its pid file. `~/...` and relative paths are
    /// taken from the remote user's home directory.
    pub remote_dir: String,
    /// The worker id written into the generated worker config.
    pub worker_id: String,
    /// Fields deep-merged into the generated worker config.
    #[serde(default = "empty_object")]
    pub overrides: serde_json::Value,
    /// Worker binary built for this host's architecture (overrides the
    /// inventory-wide `binary`).
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// ONNX Runtime library for this host's architecture (overrides the
    /// inventory-wide `ort_lib`).
    #[serde(default)]
    pub ort_lib: Option<PathBuf>,
}

/// How deployed workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// `worker --agent`: run after run.
    #[default]
    Agent,
    /// `worker`: one run, then exit.
    Once,
}

/// Authentication method for one host.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Auth {
    /// Public key authentication with a private key file (`{"key": "~/.ssh/id_ed25519"}`).
    /// A passphrase, if the key has one, comes from `HERMES_SSH_PASSWORD_<HOST>`.
    #[serde(rename = "key")]
    Key(PathBuf),
    /// The identities of the running ssh-agent (`"agent"`).
    #[serde(rename = "agent")]
    Agent,
    /// Password authentication (`"password"`); the password itself comes only
    /// from `HERMES_SSH_PASSWORD_<HOST>` or `--ask-password`.
    #[serde(rename = "password")]
    Password,
}

fn default_port() -> u16 {
    22
}

fn default_ort_lib() -> PathBuf {
    PathBuf::from(DEFAULT_ORT_LIB)
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// Name of the environment variable that may hold `host`'s password (or key
/// passphrase): `HERMES_SSH_PASSWORD_` + the host name in upper case with
/// every character other than a letter or digit replaced by `_`.
pub fn password_env_var(host: &str) -> String {
    let suffix: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("HERMES_SSH_PASSWORD_{suffix}")
}

/// Reads and validates the inventory file at `path`. Relative paths in it
/// are taken from the inventory's folder (`~/` from the local home).
pub fn load(path: &Path) -> anyhow::Result<Cluster> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read inventory", path.display()))?;
    let mut cluster =
        parse(&text).with_context(|| format!("{}: invalid inventory", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    cluster.resolve_paths(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    });
    Ok(cluster)
}

impl Cluster {
    /// Makes the inventory's relative paths relative to `dir` (its folder)
    /// and fills in the default base worker config (`dir/worker.json`).
    /// The default ONNX Runtime library stays relative to the current
    /// directory.
    pub fn resolve_paths(&mut self, dir: &Path) {
        let at = |p: &mut PathBuf| {
            let expanded = expand_home(p);
            *p = if expanded.is_absolute() {
                expanded
            } else {
                dir.join(expanded)
            };
        };
        let mut worker_config = self
            .worker_config
            .take()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKER_CONFIG));
        at(&mut worker_config);
        self.worker_config = Some(worker_config);
        if self.ort_lib != Path::new(DEFAULT_ORT_LIB) {
            at(&mut self.ort_lib);
        }
        for p in [&mut self.binary, &mut self.key_file].into_iter().flatten() {
            at(p);
        }
        for host in &mut self.hosts {
            for p in [&mut host.binary, &mut host.ort_lib].into_iter().flatten() {
                at(p);
            }
        }
    }

    /// The base worker config (after [`Self::resolve_paths`]).
    pub fn worker_config_path(&self) -> PathBuf {
        self.worker_config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKER_CONFIG))
    }
}

/// Parses and validates inventory JSON text.
pub fn parse(text: &str) -> anyhow::Result<Cluster> {
    let value: serde_json::Value = serde_json::from_str(text).context("not valid JSON")?;
    if let Some(field) = find_password_field(&value, "") {
        bail!(
            "field `{field}`: passwords are not allowed in the inventory; a password \
             comes only from the environment variable HERMES_SSH_PASSWORD_<HOST> \
             (for example {}) or from an interactive prompt (`master deploy --ask-password`); \
             better, use `\"auth\": {{\"key\": \"~/.ssh/id_ed25519\"}}` or `\"auth\": \"agent\"`",
            password_env_var("pi-1")
        );
    }
    let cluster: Cluster = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        anyhow::anyhow!("field `{path}`: {}", e.into_inner())
    })?;
    validate(&cluster)?;
    Ok(cluster)
}

/// Returns the dotted path of the first object key named like a password.
fn find_password_field(value: &serde_json::Value, at: &str) -> Option<String> {
    match value {
        serde_json::Value::Object(map) => map.iter().find_map(|(key, child)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            let lower = key.to_ascii_lowercase();
            if matches!(lower.as_str(), "password" | "passwd" | "passphrase") {
                Some(path)
            } else {
                find_password_field(child, &path)
            }
        }),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, child)| find_password_field(child, &format!("{at}[{i}]"))),
        _ => None,
    }
}

fn validate(cluster: &Cluster) -> anyhow::Result<()> {
    if cluster.hosts.is_empty() {
        bail!("field `hosts`: the inventory lists no hosts");
    }
    if !cluster.overrides.is_object() {
        bail!("field `overrides`: must be a JSON object");
    }
    if let Some(run) = &cluster.run_id {
        common::agents::check_run_id(run).map_err(|e| anyhow::anyhow!("field `run_id`: {e}"))?;
    }
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for (i, host) in cluster.hosts.iter().enumerate() {
        let at = format!("hosts[{i}]");
        for (field, value) in [
            ("name", &host.name),
            ("address", &host.address),
            ("user", &host.user),
            ("remote_dir", &host.remote_dir),
            ("worker_id", &host.worker_id),
        ] {
            if value.trim().is_empty() {
                bail!("field `{at}.{field}`: must not be empty");
            }
        }
        if host.port == 0 {
            bail!("field `{at}.port`: 0 is not a valid port");
        }
        if !host.overrides.is_object() {
            bail!("field `{at}.overrides`: must be a JSON object");
        }
        if !names.insert(host.name.as_str()) {
            bail!("field `{at}.name`: host name `{}` appears twice", host.name);
        }
        if !ids.insert(host.worker_id.as_str()) {
            bail!(
                "field `{at}.worker_id`: worker id `{}` appears twice",
                host.worker_id
            );
        }
    }
    Ok(())
}

/// Keeps the hosts named in `filter` (all hosts when `filter` is empty).
/// Naming a host that is not in the inventory is an error.
pub fn select<'a>(cluster: &'a Cluster, filter: &[String]) -> anyhow::Result<Vec<&'a Host>> {
    if filter.is_empty() {
        return Ok(cluster.hosts.iter().collect());
    }
    for name in filter {
        if !cluster.hosts.iter().any(|h| &h.name == name) {
            let known: Vec<&str> = cluster.hosts.iter().map(|h| h.name.as_str()).collect();
            bail!(
                "--hosts: no host named `{name}` in the inventory (known: {})",
                known.join(", ")
            );
        }
    }
    Ok(cluster
        .hosts
        .iter()
        .filter(|h| filter.contains(&h.name))
        .collect())
}

/// Expands a leading `~/` with the local `HOME`.
pub fn expand_home(path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "brokers": "10.0.0.1:9092",
        "hosts": [
            {"name": "pi-1", "address": "10.0.0.21", "user": "pi",
             "auth": {"key": "~/.ssh/id_ed25519"}, "remote_dir": "hermes", "worker_id": "w1"},
            {"name": "jetson", "address": "jetson.local", "port": 2222, "user": "nv",
             "auth": "agent", "remote_dir": "/opt/hermes", "worker_id": "w2",
             "overrides": {"training": {"epochs": 2}}, "binary": "target/aarch64/worker"}
        ]
    }"#;

    #[test]
    fn parses_a_good_inventory() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.hosts.len(), 2);
        assert_eq!(c.hosts[0].port, 22);
        assert_eq!(
            c.hosts[0].auth,
            Auth::Key(PathBuf::from("~/.ssh/id_ed25519"))
        );
        assert_eq!(c.hosts[1].auth, Auth::Agent);
        assert_eq!(c.hosts[1].port, 2222);
        assert_eq!(c.worker_config, None);
        assert_eq!(c.mode, WorkerMode::Agent);
        assert_eq!(c.run_id, None);
        assert_eq!(c.hosts[1].overrides["training"]["epochs"], 2);
    }

    #[test]
    fn relative_paths_are_taken_from_the_inventorys_folder() {
        let text = GOOD.replace(
            r#""brokers": "10.0.0.1:9092","#,
            r#""brokers": "10.0.0.1:9092", "binary": "bin/worker", "ort_lib": "/abs/lib.so",
               "key_file": "keys/run.key", "run_id": "exp-1", "mode": "once",
               "overrides": {"slowdown": 2.0},"#,
        );
        let mut c = parse(&text).unwrap();
        c.resolve_paths(Path::new("/inv"));
        assert_eq!(c.worker_config_path(), PathBuf::from("/inv/worker.json"));
        assert_eq!(c.binary, Some(PathBuf::from("/inv/bin/worker")));
        assert_eq!(c.ort_lib, PathBuf::from("/abs/lib.so"));
        assert_eq!(c.key_file, Some(PathBuf::from("/inv/keys/run.key")));
        assert_eq!(
            c.hosts[1].binary,
            Some(PathBuf::from("/inv/target/aarch64/worker"))
        );
        assert_eq!(c.run_id.as_deref(), Some("exp-1"));
        assert_eq!(c.mode, WorkerMode::Once);
        assert_eq!(c.overrides["slowdown"], 2.0);
        // The default library stays where deploy/ort/install.sh puts it.
        let mut d = parse(GOOD).unwrap();
        d.resolve_paths(Path::new("/inv"));
        assert_eq!(d.ort_lib, PathBuf::from(DEFAULT_ORT_LIB));
        let bad = GOOD.replace(r#""brokers": "10.0.0.1:9092","#, r#""run_id": "a b","#);
        assert!(format!("{:#}", parse(&bad).unwrap_err()).contains("field `run_id`"));
    }

    #[test]
    fn rejects_password_anywhere() {
        let text = GOOD.replace(r#""user": "pi","#, r#""user": "pi", "password": "x","#);
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("hosts[0].password"), "{err}");
        assert!(err.contains("HERMES_SSH_PASSWORD_"), "{err}");
        assert!(err.contains("--ask-password"), "{err}");
        let nested = GOOD.replace(
            r#""auth": "agent""#,
            r#""auth": {"key": "k", "password": "x"}"#,
        );
        let err = format!("{:#}", parse(&nested).unwrap_err());
        assert!(err.contains("hosts[1].auth.password"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_with_path() {
        let text = GOOD.replace(r#""port": 2222"#, r#""prot": 2222"#);
        let err = format!("{:#}", parse(&text).unwrap_err());
        assert!(err.contains("hosts[1]") && err.contains("prot"), "{err}");
    }

    #[test]
    fn rejects_duplicates_and_empty() {
        let dup = GOOD.replace(r#""worker_id": "w2""#, r#""worker_id": "w1""#);
        assert!(format!("{:#}", parse(&dup).unwrap_err()).contains("appears twice"));
        let empty = r#"{"hosts": []}"#;
        assert!(format!("{:#}", parse(empty).unwrap_err()).contains("no hosts"));
    }

    #[test]
    fn select_filters_and_rejects_unknown_names() {
        let c = parse(GOOD).unwrap();
        assert_eq!(select(&c, &[]).unwrap().len(), 2);
        let only = select(&c, &["jetson".to_string()]).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].name, "jetson");
        assert!(select(&c, &["nope".to_string()]).is_err());
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let c = parse(include_str!("../../../conf/cluster.json")).unwrap();
        assert!(c.hosts.len() >= 2);
    }

    #[test]
    fn env_var_name() {
        assert_eq!(
            password_env_var("pi-1.local"),
            "HERMES_SSH_PASSWORD_PI_1_LOCAL"
        );
    }
}
