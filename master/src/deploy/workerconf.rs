//! Generates each host's worker configuration from the base worker config.
//!
//! Only three things change: `worker_id`, `kafka.brokers` (when a broker
//! address is given) and whatever the host's `overrides` object sets. The
//! worker rejects unknown fields, so nothing else is added.

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// Builds the worker config for one host.
///
/// `base` must be a JSON object; `overrides` (an object) is deep-merged last,
/// so a host can override even the broker address.
pub fn generate(
    base: &Value,
    worker_id: &str,
    brokers: Option<&str>,
    overrides: &Value,
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
    deep_merge(&mut config, &Value::Object(fixed));
    if !overrides.is_object() {
        bail!("`overrides` must be a JSON object");
    }
    deep_merge(&mut config, overrides);
    Ok(config)
}

/// Whether a generated worker config relies on the shipped run key: it is
/// not `kafka.insecure` and names no `kafka.hmac_key_file` of its own.
pub fn wants_run_key(config: &Value) -> bool {
    let kafka = &config["kafka"];
    !kafka["insecure"].as_bool().unwrap_or(false)
        && kafka["hmac_key_file"].as_str().is_none_or(str::is_empty)
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
            &json!({"training": {"epochs": 3}}),
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
        let out = generate(&base, "w1", None, &json!({})).unwrap();
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
        assert!(generate(&json!([1]), "w", None, &json!({})).is_err());
        assert!(generate(&json!({}), "w", None, &json!(3)).is_err());
    }
}
