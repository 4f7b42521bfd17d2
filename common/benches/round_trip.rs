//! The floor under a round's coordination: one payload down to a worker and
//! one back (the shape of a round's global and update), through
//! `common`'s transport and through plain rdkafka, on the same broker in
//! the same run. A BSP round cannot cost less above its compute than this
//! round trip for a model-sized payload.
//!
//! `cargo bench -p common --bench round_trip` (broker: `deploy/kafka/start.sh`,
//! or `HERMES_TEST_BROKERS`). Prints a table; writes data/bench/round_trip.json.

mod support;

use std::time::{Duration, Instant};

use common::auth::HmacKey;
use common::config::KafkaConfig;
use common::envelope::MessageKind;
use common::transport::{StartAt, Transport};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Payload sizes: a control message and the MLP's global model (109,386 f32).
const SIZES: [usize; 2] = [1_000, 437_544];
const TRIPS: usize = 40;
const WARM_UP: usize = 3;

fn brokers() -> String {
    std::env::var("HERMES_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Round trips through our transport (keyed, as a run is): the "master"
/// sends on the model topic, the "worker" answers each on the updates
/// topic with a payload of the same size.
async fn ours(cfg: &KafkaConfig, len: usize) -> anyhow::Result<Vec<f64>> {
    let run = format!("rtt-{}", uuid::Uuid::new_v4().simple());
    let key = HmacKey::from_bytes(&[0x42; 32])?;
    let master = Transport::connect_with_key(cfg, &run, "master", Some(key.clone())).await?;
    master.create_run_topics().await?;
    let worker = Transport::connect_with_key(cfg, &run, "worker", Some(key)).await?;
    let (down, up) = (master.topics().model(), master.topics().updates());
    let mut at_worker = worker
        .receiver(std::slice::from_ref(&down), "rtt-w", StartAt::Beginning)
        .await?;
    let mut at_master = master
        .receiver(std::slice::from_ref(&up), "rtt-m", StartAt::Beginning)
        .await?;
    let body = payload(len);
    let echo = tokio::spawn({
        let up = up.clone();
        async move {
            for _ in 0..TRIPS + WARM_UP {
                let d = at_worker
                    .recv_timeout(Duration::from_secs(30))
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("worker: nothing arrived"))?;
                worker
                    .send_payload(&up, "worker", MessageKind::Update, &d.payload)
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    let mut trips = Vec::new();
    for i in 0..TRIPS + WARM_UP {
        let start = Instant::now();
        master
            .send_payload(&down, "master", MessageKind::Model, &body)
            .await?;
        let back = at_master
            .recv_timeout(Duration::from_secs(30))
            .await?
            .ok_or_else(|| anyhow::anyhow!("master: no answer"))?;
        anyhow::ensure!(back.payload.len() == len, "size differs");
        if i >= WARM_UP {
            trips.push(start.elapsed().as_secs_f64());
        }
    }
    echo.await??;
    master.delete_topics(&master.topics().run_topics()).await?;
    Ok(trips)
}

fn producer(cfg: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", &cfg.compression)
        .set("linger.ms", "0")
        .set("socket.nagle.disable", "true")
        .create()?)
}

fn consumer(cfg: &KafkaConfig, topic: &str, group: &str) -> anyhow::Result<StreamConsumer> {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("socket.nagle.disable", "true")
        .set("max.partition.fetch.bytes", (8 * 1024 * 1024).to_string())
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    Ok(c)
}

/// The same round trips as plain records: no envelope, no tag.
async fn plain(cfg: &KafkaConfig, len: usize) -> anyhow::Result<Vec<f64>> {
    let run = format!("rtt-plain-{}", uuid::Uuid::new_v4().simple());
    let admin = Transport::connect_with_key(cfg, &run, "admin", None).await?;
    admin.create_run_topics().await?;
    let (down, up) = (admin.topics().model(), admin.topics().updates());
    let (to_worker, to_master) = (producer(cfg)?, producer(cfg)?);
    let (at_worker, at_master) = (
        consumer(cfg, &down, "rtt-plain-w")?,
        consumer(cfg, &up, "rtt-plain-m")?,
    );
    let body = payload(len);
    let echo = tokio::spawn({
        let up = up.clone();
        async move {
            for _ in 0..TRIPS + WARM_UP {
                let m = at_worker.recv().await?;
                let data = m.payload().unwrap_or_default().to_vec();
                to_master
                    .send(
                        FutureRecord::to(&up).key("w").payload(&data),
                        Timeout::After(Duration::from_secs(30)),
                    )
                    .await
                    .map_err(|(e, _)| e)?;
            }
            anyhow::Ok(())
        }
    });
    let mut trips = Vec::new();
    for i in 0..TRIPS + WARM_UP {
        let start = Instant::now();
        to_worker
            .send(
                FutureRecord::to(&down).key("m").payload(&body),
                Timeout::After(Duration::from_secs(30)),
            )
            .await
            .map_err(|(e, _)| e)?;
        let back = tokio::time::timeout(Duration::from_secs(30), at_master.recv()).await??;
        anyhow::ensure!(back.payload().map_or(0, <[u8]>::len) == len, "size differs");
        if i >= WARM_UP {
            trips.push(start.elapsed().as_secs_f64());
        }
    }
    echo.await??;
    admin.delete_topics(&admin.topics().run_topics()).await?;
    Ok(trips)
}

fn p95(xs: &[f64]) -> f64 {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() as f64 * 0.95) as usize).min(s.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cfg = KafkaConfig {
        brokers: brokers(),
        ..KafkaConfig::default()
    };
    let mut rows = Vec::new();
    println!(
        "round trip (down and back), {TRIPS} trips each after {WARM_UP} warm-up, compression {}",
        cfg.compression
    );
    println!(
        "{:<10} {:<22} {:>12} {:>10}",
        "bytes", "path", "median ms", "p95 ms"
    );
    for len in SIZES {
        let plain = plain(&cfg, len).await?;
        let ours = ours(&cfg, len).await?;
        for (path, trips) in [("plain rdkafka", &plain), ("common::transport", &ours)] {
            let (med, tail) = (support::median(trips) * 1e3, p95(trips) * 1e3);
            println!("{len:<10} {path:<22} {med:>12.2} {tail:>10.2}");
            rows.push(serde_json::json!({
                "bytes": len, "path": path, "median_ms": med, "p95_ms": tail,
            }));
        }
        let ratio = support::median(&ours) / support::median(&plain);
        println!("{len:<10} {:<22} {ratio:>12.3}", "ours / plain");
    }
    let report = serde_json::json!({
        "bench": "round_trip",
        "inputs": {"trips": TRIPS, "sizes": SIZES, "compression": cfg.compression, "brokers": cfg.brokers, "keyed": true},
        "machine": support::machine(),
        "results": rows,
    });
    let path = support::write_report("round_trip", &report)?;
    println!("wrote {}", path.display());
    Ok(())
}
