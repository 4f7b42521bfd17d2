//! Generates each host's worker configuration from the base worker config.
//!
//! Only these change: `worker_id`, `kafka.brokers` (when a broker address is
//! given), `run_id` (when the inventory pins one), then whatever the
//! inventory's and the host's `overrides` objects set, in that order. The
//! worker rejects unknown fields, so nothing else is added.

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// Builds the worker config for one host.
///
/// `base` must be a JSON object; `overrides` (objects: the inventory's,
/// then the host's) are deep-merged last, so a host can override even the
/// broker address.
pub fn generate(
    base: &Value,
    worker_id: &str,
    brokers: Option<&str>,
    run_id: Option<&str>,
    overrides: &[&Value],
) -> anyhow::Result<Value> {
    let Value::Object(base_map) = base else {
        bail!("the base worker config must be a JSON object");
    };
    let mut config = Value::Object(base_map.clone());
    let mut fixed = Map::new();
    fixed.insert("worker_id".into(), Value::String(worker_id.to_string()));
    if let Some(brokers) = brokers {
        let mut kafka = Map::new();
        kafka.insert("brokers".into(), Value::String(brokers.to_string()));
        fixed.insert("kafka".into(), Value::Object(kafka));
    }
    if let Some(run) = run_id {
        fixed.insert("run_id".into(), Value::String(run.to_string()));
    }
    deep_merge(&mut config, &Value::Object(fixed));
    for o in overrides {
        if !o.is_object() {
            bail!("`overrides` must be a JSON object");
        }
        deep_merge(&mut config, o);
    }
    Ok(config)
}

/// Whether a generated worker config relies on the shipped run key: it is
/// not `kafka.insecure` and names no `kafka.hmac_key_file` of its own.
pub fn wants_run_key(config: &Value) -> bool {
    let kafka = &config["kafka"];
    !kafka["insecure"].as_bool().unwrap_or(false)
        && kafka["hmac_key_file"].as_str().is_none_or(str::is_empty)
}

/// Where the worker of a generated config writes its state file, relative
/// to the remote directory unless absolute (`work_dir`, else the default
/// `data/worker/<id>`).
pub fn state_file(config: &Value) -> std::path::PathBuf {
    let dir = match config["work_dir"].as_str() {
        Some(d) if !d.is_empty() => std::path::PathBuf::from(d),
        _ => common::config::default_worker_dir(config["worker_id"].as_str().unwrap_or("")),
    };
    dir.join(common::config::WORKER_STATE_FILE)
}

/// Reads the base worker config file.
pub fn load_base(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "{}: cannot read the base worker config (set `worker_config` in the inventory)",
            path.display()
        )
    })?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    if !value.is_object() {
        bail!(
            "{}: the base worker config must be a JSON object",
            path.display()
        );
    }
    Ok(value)
}

pub use common::config::deep_merge;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_id_brokers_and_merges_overrides() {
        let base = json!({"worker_id": "x", "kafka": {"brokers": "old:1", "security": {"protocol": "ssl"}},
                          "training": {"epochs": 1, "batch": 32}});
        let out = generate(
            &base,
            "w7",
            Some("10.0.0.1:9092"),
            None,
            &[&json!({"training": {"epochs": 3}})],
        )
        .unwrap();
        assert_eq!(out["worker_id"], "w7");
        assert_eq!(out["kafka"]["brokers"], "10.0.0.1:9092");
        assert_eq!(out["kafka"]["security"]["protocol"], "ssl");
        assert_eq!(out["training"], json!({"epochs": 3, "batch": 32}));
    }

    #[test]
    fn keeps_base_brokers_when_none_given() {
        let base = json!({"kafka": {"brokers": "b:9092"}});
        let out = generate(&base, "w1", None, None, &[]).unwrap();
        assert_eq!(out["kafka"]["brokers"], "b:9092");
        assert_eq!(out["worker_id"], "w1");
    }

    #[test]
    fn the_run_key_is_for_hosts_without_their_own_key_or_insecure() {
        assert!(wants_run_key(&json!({"kafka": {"hmac_key_file": null}})));
        assert!(wants_run_key(&json!({})));
        assert!(!wants_run_key(&json!({"kafka": {"insecure": true}})));
        assert!(!wants_run_key(
            &json!({"kafka": {"hmac_key_file": "/etc/hermes.key"}})
        ));
    }

    #[test]
    fn rejects_non_objects() {
        assert!(generate(&json!([1]), "w", None, None, &[]).is_err());
        assert!(generate(&json!({}), "w", None, None, &[&json!(3)]).is_err());
    }

    #[test]
    fn the_inventorys_run_and_overrides_come_before_the_hosts() {
        let base = json!({"run_id": null, "slowdown": 1.0, "heartbeat_secs": 2});
        let out = generate(
            &base,
            "w1",
            None,
            Some("exp-4"),
            &[
                &json!({"slowdown": 3.0, "heartbeat_secs": 5}),
                &json!({"slowdown": 2.0}),
            ],
        )
        .unwrap();
        assert_eq!(out["run_id"], "exp-4");
        assert_eq!(out["slowdown"], 2.0);
        assert_eq!(out["heartbeat_secs"], 5);
        assert_eq!(
            state_file(&out),
            std::path::PathBuf::from("data/worker/w1/state.json")
        );
        let own = json!({"worker_id": "a b", "work_dir": "/srv/w"});
        assert_eq!(
            state_file(&own),
            std::path::PathBuf::from("/srv/w/state.json")
        );
    }
}
