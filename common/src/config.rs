//! Typed configuration: a JSON file, then `HERMES_*` environment overrides.
//!
//! Every binary has one config struct (in its own crate) built from the shared
//! sections defined here. Loading goes through the `config` crate (file source,
//! then environment source), and the merged tree is deserialized with
//! `serde_path_to_error`, so a wrong type or an unknown field is reported as
//! `<file>: field <path>: <what is wrong>` on one line.
//!
//! Environment overrides use `HERMES_` plus the field path with `__` between
//! levels: `HERMES_WORKER_ID=w7`, `HERMES_KAFKA__BROKERS=10.0.0.2:9092`. Only
//! variables whose first path segment names a field of the config are taken,
//! so unrelated `HERMES_*` variables (such as `HERMES_HMAC_KEY`) never clash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override configuration fields.
pub const ENV_PREFIX: &str = "HERMES";

/// Why a configuration could not be loaded. Each message fits on one line and
/// names the file (and the field, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not exist or cannot be read.
    #[error("{path}: cannot read config file: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{path}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A field has the wrong type, an unknown name, or an invalid value.
    #[error("{path}: field `{field}`: {message}")]
    Field {
        /// The config file.
        path: PathBuf,
        /// Dotted path of the offending field (`.` for the root).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The layered sources could not be merged (for example a bad environment override).
    #[error("{path}: {message}")]
    Layering {
        /// The config file.
        path: PathBuf,
        /// What the `config` crate said.
        message: String,
    },
}

/// Loads `T` from the JSON file at `path`, then applies `HERMES_*` overrides
/// taken from the process environment. A `HERMES_*` variable whose value is
/// not UTF-8 is an error; other variables that are not UTF-8 are ignored.
pub fn load<T>(path: &Path) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    // Not `std::env::vars()`: it panics on the first variable that is not UTF-8.
    let env = utf8_env(std::env::vars_os()).map_err(|message| ConfigError::Layering {
        path: path.to_path_buf(),
        message,
    })?;
    load_with_env(path, env)
}

/// The environment's UTF-8 variables; a `HERMES_*` one that is not UTF-8 is
/// an error naming it, any other is skipped.
fn utf8_env<I>(vars: I) -> Result<Vec<(String, String)>, String>
where
    I: IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
{
    let prefix = format!("{ENV_PREFIX}_");
    let mut env = Vec::new();
    for (name, value) in vars {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => env.push((name, value)),
            (Ok(name), Err(_)) if name.starts_with(&prefix) => {
                return Err(format!("environment variable {name} is not valid UTF-8"))
            }
            _ => {}
        }
    }
    Ok(env)
}

/// Like [`load`], with the environment given explicitly (used by tests).
pub fn load_with_env<T, I>(path: &Path, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (String, String)>,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str_with_env(&text, path, env)
}

/// Like [`load_with_env`], for JSON text already in memory; `path` only names
/// it in errors. This is the whole of loading but the file read, so tests and
/// fuzzing can feed it any text.
pub fn load_str_with_env<T, I>(text: &str, path: &Path, env: I) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
    I: IntoIterator<Item = (String, String)>,
{
    // Parse once ourselves: serde_json reports line and column, which the
    // `config` crate's JSON source does not.
    serde_json::from_str::<serde_json::Value>(text).map_err(|e| ConfigError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;

    let overrides = env_overrides::<T, I>(env);
    let merged = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Json))
        .add_source(
            ::config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides.into_iter().collect())),
        )
        .build()
        .map_err(|e| ConfigError::Layering {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let tree: serde_json::Value =
        merged
            .try_deserialize()
            .map_err(|e: ::config::ConfigError| ConfigError::Layering {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
    serde_path_to_error::deserialize(tree).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Field {
            path: path.to_path_buf(),
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// Keeps the `HERMES_*` variables whose first path segment is a top-level
/// field of `T` (as seen in `T::default()` serialized).
fn env_overrides<T, I>(env: I) -> BTreeMap<String, String>
where
    T: Serialize + Default,
    I: IntoIterator<Item = (String, String)>,
{
    let fields: Vec<String> = match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let prefix = format!("{ENV_PREFIX}_");
    env.into_iter()
        .filter(|(name, _)| {
            let Some(rest) = name.strip_prefix(&prefix) else {
                return false;
            };
            let first = rest.split("__").next().unwrap_or_default().to_lowercase();
            fields.contains(&first)
        })
        .collect()
}

/// Connection to the Kafka cluster, shared by master and worker.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, comma separated (`host:port,host:port`).
    pub brokers: String,
    /// Prefix of every topic name; topics are `<prefix>.<run id>.<stream>`.
    pub topic_prefix: String,
    /// Largest payload sent as one record; larger payloads are chunked.
    /// Must stay below the broker's `message.max.bytes` (about 1 MiB by default).
    pub chunk_bytes: usize,
    /// Producer compression: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    pub compression: String,
    /// Partitions of the updates topic (records are keyed by sender, so one
    /// sender's records stay in order).
    pub update_partitions: i32,
    /// Replication factor of the topics this run creates: `"auto"` (or
    /// `null`, the default) for min(3, brokers in the cluster), or a number.
    /// Topics with 3 or more replicas get `min.insync.replicas` 2, others 1.
    pub replication_factor: ReplicationFactor,
    /// Largest reassembled payload accepted (bytes).
    pub max_payload_bytes: u64,
    /// Most bytes held by unfinished chunked transfers at once.
    pub max_buffered_bytes: u64,
    /// Seconds after which an unfinished chunked transfer is dropped.
    pub reassembly_timeout_secs: u64,
    /// Seconds to keep retrying (with backoff) while the broker is unreachable.
    pub connect_timeout_secs: u64,
    /// File holding the shared HMAC key; `HERMES_HMAC_KEY_FILE` / `HERMES_HMAC_KEY`
    /// are used when unset. The key itself never lives in this file.
    pub hmac_key_file: Option<PathBuf>,
    /// The key being rotated out: records tagged with it are still accepted,
    /// nothing is signed with it. Remove it once every node has the new key.
    pub hmac_previous_key_file: Option<PathBuf>,
    /// Run without authentication (records carry a CRC only, so anyone who
    /// can write to the topics can forge them). Off by default: without a
    /// configured key the master creates `data/hermes.key` and workers read it.
    pub insecure: bool,
    /// Security settings passed to librdkafka.
    pub security: KafkaSecurity,
    /// Further librdkafka properties, passed through verbatim (for example
    /// `"socket.keepalive.enable": "true"`).
    pub extra: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "hermes".into(),
            chunk_bytes: 512 * 1024,
            compression: "lz4".into(),
            update_partitions: 3,
            replication_factor: ReplicationFactor::Auto,
            max_payload_bytes: 512 * 1024 * 1024,
            max_buffered_bytes: 1024 * 1024 * 1024,
            reassembly_timeout_secs: 120,
            connect_timeout_secs: 60,
            hmac_key_file: None,
            hmac_previous_key_file: None,
            insecure: false,
            security: KafkaSecurity::default(),
            extra: BTreeMap::new(),
        }
    }
}

/// How many copies of each partition the topics of a run get
/// (`kafka.replication_factor`).
///
/// In JSON: `"auto"` or `null` for [`ReplicationFactor::Auto`], a positive
/// integer for [`ReplicationFactor::Fixed`]. The environment override
/// `HERMES_KAFKA__REPLICATION_FACTOR` takes the same values (`auto`, `3`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReplicationFactor {
    /// min(3, the number of brokers in the cluster's metadata when the topics
    /// are created): 1 on a single broker, 3 on a cluster of three or more.
    #[default]
    Auto,
    /// Exactly this many replicas (1 ..= 32767); creating a topic fails when
    /// the cluster has fewer brokers.
    Fixed(i16),
}

impl ReplicationFactor {
    /// The factor topics are created with on a cluster of `brokers` brokers.
    pub fn resolve(self, brokers: usize) -> i32 {
        match self {
            Self::Auto => brokers.clamp(1, 3) as i32,
            Self::Fixed(n) => i32::from(n),
        }
    }
}

impl std::fmt::Display for ReplicationFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for ReplicationFactor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Auto => s.serialize_str("auto"),
            Self::Fixed(n) => s.serialize_i16(*n),
        }
    }
}

impl<'de> Deserialize<'de> for ReplicationFactor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ReplicationFactorVisitor)
    }
}

/// What a `replication_factor` value may be, for error messages.
const REPLICATION_EXPECTED: &str = "\"auto\", null or a replication factor from 1 to 32767";

/// Reads `"auto"`, `null`, a number or a numeric string (an environment override).
struct ReplicationFactorVisitor;

impl ReplicationFactorVisitor {
    fn number<E: serde::de::Error>(v: i128) -> Result<ReplicationFactor, E> {
        match i16::try_from(v) {
            Ok(n) if n >= 1 => Ok(ReplicationFactor::Fixed(n)),
            _ => Err(E::custom(format!(
                "replication factor {v} is out of range: expected {REPLICATION_EXPECTED}"
            ))),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for ReplicationFactorVisitor {
    type Value = ReplicationFactor;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REPLICATION_EXPECTED)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Self::number(i128::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Self::number(i128::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.fract() == 0.0 && v.abs() < 1e6 {
            Self::number(v as i128)
        } else {
            Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(ReplicationFactor::Auto);
        }
        match t.parse::<i128>() {
            Ok(n) => Self::number(n),
            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
        }
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(ReplicationFactor::Auto)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(ReplicationFactor::Auto)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// TLS and SASL settings for librdkafka. Secrets are named by environment
/// variable, never stored here.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: Option<String>,
    /// `sasl.mechanisms`, e.g. `PLAIN` or `SCRAM-SHA-512`.
    pub sasl_mechanism: Option<String>,
    /// `sasl.username`.
    pub sasl_username: Option<String>,
    /// Name of the environment variable holding `sasl.password`.
    pub sasl_password_env: Option<String>,
    /// `ssl.ca.location`.
    pub ssl_ca_location: Option<PathBuf>,
    /// `ssl.certificate.location`.
    pub ssl_certificate_location: Option<PathBuf>,
    /// `ssl.key.location`.
    pub ssl_key_location: Option<PathBuf>,
}

/// Logging settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A `tracing` filter (`info`, `debug`, `common=debug,info`); `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

/// A worker's default working directory, `data/worker/<id>`, with the id
/// made a plain file name (characters other than `[A-Za-z0-9._-]` become
/// `_`; an id of only dots gets a leading `_`). The master's `deploy` finds
/// a worker's state file with it.
pub fn default_worker_dir(worker_id: &str) -> std::path::PathBuf {
    let id: String = worker_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let id = if id.chars().all(|c| c == '.') {
        format!("_{id}")
    } else {
        id
    };
    std::path::PathBuf::from("data/worker").join(id)
}

/// The file in a worker's working directory that says what it does now
/// (JSON: id, mode, run served, pid, time), read by `master deploy status`.
pub const WORKER_STATE_FILE: &str = "state.json";

/// Merges `patch` into `target`: objects merge key by key (recursively),
/// everything else (arrays, scalars, null) replaces the old value.
pub fn deep_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (key, value) in p {
                match t.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        deep_merge(existing, value)
                    }
                    _ => {
                        t.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        worker_id: String,
        rounds: u32,
        kafka: KafkaConfig,
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_then_environment() {
        let f = write(r#"{"worker_id": "a", "rounds": 3, "kafka": {"brokers": "x:1"}}"#);
        let cfg: Sample = load_with_env(
            f.path(),
            env(&[
                ("HERMES_WORKER_ID", "b"),
                ("HERMES_KAFKA__BROKERS", "y:2"),
                ("HERMES_HMAC_KEY", "ignored, not a field"),
            ]),
        )
        .expect("loads");
        assert_eq!(cfg.worker_id, "b");
        assert_eq!(cfg.rounds, 3);
        assert_eq!(cfg.kafka.brokers, "y:2");
        assert_eq!(cfg.kafka.chunk_bytes, KafkaConfig::default().chunk_bytes);
    }

    #[test]
    fn numeric_override_is_parsed() {
        let f = write(r#"{"rounds": 3}"#);
        let cfg: Sample = load_with_env(f.path(), env(&[("HERMES_ROUNDS", "9")])).expect("loads");
        assert_eq!(cfg.rounds, 9);
    }

    #[test]
    fn missing_file_names_the_file() {
        let err = load_with_env::<Sample, _>(Path::new("/nonexistent/x.json"), env(&[]))
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.starts_with("/nonexistent/x.json: cannot read"), "{msg}");
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let f = write("{\n  \"rounds\": 3,\n  oops\n}");
        let msg = load_with_env::<Sample, _>(f.path(), env(&[]))
            .expect_err("must fail")
            .to_string();
        assert!(msg.contains("invalid JSON at line 3"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn unknown_field_is_named() {
        let f = write(r#"{"kafka": {"brokerz": "x"}}"#);
        let msg = load_with_env::<Sample, _>(f.path(), env(&[]))
            .expect_err("must fail")
            .to_string();
        assert!(msg.contains("field `kafka.brokerz`"), "{msg}");
        assert!(msg.contains("unknown field"), "{msg}");
    }

    #[test]
    fn replication_factor_is_auto_or_a_positive_number() {
        let load = |text: &str, env_pairs: &[(&str, &str)]| {
            load_with_env::<Sample, _>(write(text).path(), env(env_pairs))
                .map(|s| s.kafka.replication_factor)
        };
        assert_eq!(
            KafkaConfig::default().replication_factor,
            ReplicationFactor::Auto
        );
        assert_eq!(load("{}", &[]).expect("loads"), ReplicationFactor::Auto);
        for (json, want) in [
            (r#""auto""#, ReplicationFactor::Auto),
            ("null", ReplicationFactor::Auto),
            ("1", ReplicationFactor::Fixed(1)),
            ("3", ReplicationFactor::Fixed(3)),
        ] {
            let text = format!(r#"{{"kafka": {{"replication_factor": {json}}}}}"#);
            assert_eq!(load(&text, &[]).expect(json), want, "{json}");
        }
        let file = r#"{"kafka": {"replication_factor": 1}}"#;
        let over = |v| load(file, &[("HERMES_KAFKA__REPLICATION_FACTOR", v)]).expect(v);
        assert_eq!(over("auto"), ReplicationFactor::Auto);
        assert_eq!(over("3"), ReplicationFactor::Fixed(3));
        for bad in ["0", "-1", "40000", r#""three""#, "2.5", "true"] {
            let text = format!(r#"{{"kafka": {{"replication_factor": {bad}}}}}"#);
            let msg = load(&text, &[]).expect_err(bad).to_string();
            assert!(
                msg.contains("field `kafka.replication_factor`"),
                "{bad}: {msg}"
            );
            assert!(msg.contains("\"auto\""), "{bad}: {msg}");
        }
        // Written back as it is read.
        let json = |f: ReplicationFactor| serde_json::to_string(&f).expect("json");
        assert_eq!(json(ReplicationFactor::Auto), r#""auto""#);
        assert_eq!(json(ReplicationFactor::Fixed(3)), "3");
        assert_eq!(ReplicationFactor::Auto.resolve(1), 1);
        assert_eq!(ReplicationFactor::Auto.resolve(2), 2);
        assert_eq!(ReplicationFactor::Auto.resolve(5), 3);
        assert_eq!(ReplicationFactor::Auto.resolve(0), 1);
        assert_eq!(ReplicationFactor::Fixed(2).resolve(5), 2);
    }

    #[test]
    fn wrong_type_is_named() {
        let f = write(r#"{"rounds": "many"}"#);
        let msg = load_with_env::<Sample, _>(f.path(), env(&[]))
            .expect_err("must fail")
            .to_string();
        assert!(msg.contains("field `rounds`"), "{msg}");
    }

    /// Found by review while writing the `config` fuzz target: `load` used
    /// `std::env::vars()`, which panics when any variable of the process is
    /// not UTF-8.
    #[test]
    fn environment_that_is_not_utf8_does_not_panic() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let bad = || OsString::from_vec(vec![0x66, 0xFF, 0x6F]);
        let vars = vec![
            (OsString::from("HERMES_ROUNDS"), OsString::from("4")),
            (OsString::from("LANG_X"), bad()),
            (bad(), OsString::from("x")),
        ];
        assert_eq!(
            utf8_env(vars).expect("others are skipped"),
            env(&[("HERMES_ROUNDS", "4")])
        );
        let err = utf8_env(vec![(OsString::from("HERMES_WORKER_ID"), bad())])
            .expect_err("ours must be UTF-8");
        assert!(err.contains("HERMES_WORKER_ID"), "{err}");
    }

    #[test]
    fn text_loads_like_a_file_and_is_named_by_the_given_path() {
        let text = r#"{"worker_id": "a", "rounds": 3}"#;
        let from_text: Sample = load_str_with_env(
            text,
            Path::new("inline.json"),
            env(&[("HERMES_ROUNDS", "4")]),
        )
        .expect("loads");
        let f = write(text);
        let from_file: Sample =
            load_with_env(f.path(), env(&[("HERMES_ROUNDS", "4")])).expect("loads");
        assert_eq!(from_text, from_file);
        assert_eq!(from_text.rounds, 4);
        let msg = load_str_with_env::<Sample, _>("{", Path::new("inline.json"), env(&[]))
            .expect_err("must fail")
            .to_string();
        assert!(msg.starts_with("inline.json: invalid JSON"), "{msg}");
    }
}
