//! TLS and SASL/SCRAM against a real broker: the test makes its own CA and
//! broker certificate (`deploy/kafka/tls.sh`, openssl), starts a broker of
//! its own with a TLS listener and a SASL/SCRAM-SHA-512-over-TLS listener
//! (`deploy/kafka/start.sh`), then:
//!
//! * a client trusting the CA connects over TLS (hostname verified) and a
//!   record goes through; a client trusting another CA is refused, and the
//!   error says it was the certificate;
//! * over SASL_SSL the right password gets in, a wrong one is refused;
//! * a real master and worker train over SASL_SSL to the end of a run.

mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster::{workspace, Cluster, OwnBroker};
use common::config::{KafkaConfig, KafkaSecurity};
use common::envelope::MessageKind;
use common::protocol::ControlMessage;
use common::transport::{StartAt, Transport};

/// The password variable the clients read (`sasl_password_env`).
const PASSWORD_ENV: &str = "HERMES_TEST_SCRAM_PASSWORD";

/// This test's broker: plain on `port`, TLS on `port + 2`, SASL/SCRAM over
/// TLS on `port + 3`, one SCRAM user `hermes` with `password`.
fn tls_broker(state_dir: PathBuf, tls_dir: &Path, port: u16, password: &str) -> OwnBroker {
    let mut broker = OwnBroker::new(state_dir, port);
    broker.env = vec![
        ("KAFKA_SSL_PORT".into(), (port + 2).to_string()),
        ("KAFKA_SASL_SSL_PORT".into(), (port + 3).to_string()),
        ("KAFKA_TLS_DIR".into(), tls_dir.display().to_string()),
        ("KAFKA_SCRAM_USERS".into(), format!("hermes:{password}")),
    ];
    broker
}

fn make_ca(dir: &Path) {
    let out = Command::new("bash")
        .arg(workspace().join("deploy/kafka/tls.sh"))
        .arg(dir)
        .output()
        .expect("run tls.sh");
    assert!(
        out.status.success(),
        "tls.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kafka(brokers: String, security: KafkaSecurity) -> KafkaConfig {
    KafkaConfig {
        brokers,
        connect_timeout_secs: 8,
        security,
        ..Default::default()
    }
}

fn tls(ca: &Path) -> KafkaSecurity {
    KafkaSecurity {
        protocol: Some("ssl".into()),
        ssl_ca_location: Some(ca.to_path_buf()),
        ..Default::default()
    }
}

fn scram(ca: &Path, password_env: &str) -> KafkaSecurity {
    KafkaSecurity {
        protocol: Some("sasl_ssl".into()),
        sasl_mechanism: Some("SCRAM-SHA-512".into()),
        sasl_username: Some("hermes".into()),
        sasl_password_env: Some(password_env.into()),
        ssl_ca_location: Some(ca.to_path_buf()),
        ..Default::default()
    }
}

/// Connects, makes the run's topics, sends a control record and reads it back.
async fn round_trip(cfg: &KafkaConfig, run: &str) {
    let key = common::auth::HmacKey::from_bytes(&[9u8; 32]).expect("key");
    let t = Transport::connect_with_key(cfg, run, "tls-client", Some(key))
        .await
        .expect("connect over TLS");
    t.create_run_topics().await.expect("topics over TLS");
    let topic = t.topics().control();
    let mut rx = t
        .receiver(
            std::slice::from_ref(&topic),
            "tls-reader",
            StartAt::Beginning,
        )
        .await
        .expect("receiver");
    let msg = ControlMessage::Alive { version: 7 };
    t.send(&topic, "tls-client", MessageKind::Control, &msg)
        .await
        .expect("send over TLS");
    let got = match rx
        .recv_timeout(Duration::from_secs(30))
        .await
        .expect("recv")
    {
        Some(d) => d.decode::<ControlMessage>(1024).expect("decode"),
        None => panic!("nothing arrived over TLS within 30 s"),
    };
    assert_eq!(got, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_scram_verify_the_broker_and_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let tls_dir = dir.path().join("tls");
    let password = format!("pw-{}", rand::random::<u64>());
    make_ca(&tls_dir);
    make_ca(&dir.path().join("other-ca"));
    let broker = tls_broker(dir.path().join("kafka"), &tls_dir, 19692, &password);
    broker.script("start.sh");
    let ca = tls_dir.join("ca.pem");
    let wrong_ca = dir.path().join("other-ca/ca.pem");
    let ssl = format!("127.0.0.1:{}", broker.port + 2);
    let sasl = format!("127.0.0.1:{}", broker.port + 3);
    let run = format!("tls-{}", std::process::id());

    // TLS with the right CA: works; with another CA: refused, saying why.
    round_trip(&kafka(ssl.clone(), tls(&ca)), &run).await;
    let err = match Transport::connect_with_key(&kafka(ssl, tls(&wrong_ca)), &run, "x", None).await
    {
        Ok(_) => panic!("a client trusting another CA got in"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("certificate verify failed"), "{err}");

    // SASL/SCRAM over TLS: the password is read from the environment.
    // The variables are set before any thread of this test reads them.
    std::env::set_var(PASSWORD_ENV, &password);
    std::env::set_var("HERMES_TEST_SCRAM_WRONG", "not-the-password");
    round_trip(
        &kafka(sasl.clone(), scram(&ca, PASSWORD_ENV)),
        &format!("{run}-s"),
    )
    .await;
    let wrong = kafka(sasl.clone(), scram(&ca, "HERMES_TEST_SCRAM_WRONG"));
    let err = match Transport::connect_with_key(&wrong, &run, "x", None).await {
        Ok(_) => panic!("a wrong SCRAM password got in"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("Authentication failed") || err.contains("invalid credentials"),
        "{err}"
    );

    // A whole run, master and worker over SASL_SSL.
    let security = serde_json::to_value(scram(&ca, PASSWORD_ENV)).unwrap();
    let mut c = Cluster::on_brokers("tls", sasl, |m| {
        m["kafka"]["security"] = security.clone();
        m["min_workers"] = 1.into();
        m["stop"]["target_accuracy"] = serde_json::Value::Null;
        m["stop"]["max_versions"] = 3.into();
    });
    c.edit_worker(|w| w["kafka"]["security"] = security.clone());
    c.env.push((PASSWORD_ENV.into(), password.clone()));
    let mut master = c.master();
    let mut worker = c.worker("tls-worker", 1.0);
    let code = tokio::task::spawn_blocking(move || {
        let code = master.wait_exit(Duration::from_secs(180));
        (code, master.output())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "master over SASL_SSL:\n{}", code.1);
    assert_eq!(worker.wait_exit(Duration::from_secs(30)), Some(0));
    let summary = c.summary();
    assert_eq!(summary["stop_reason"], "max versions reached", "{summary}");
    assert_eq!(summary["versions"], 3);
}
