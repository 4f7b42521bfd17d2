//! Throughput of a 50 MB payload through `common`'s transport (envelope,
//! chunking, digest, reassembly) against the same bytes through a plain
//! rdkafka producer/consumer, on the same broker in the same run.
//!
//! `cargo bench -p common --bench transport` (broker: `deploy/kafka/start.sh`,
//! or `HERMES_TEST_BROKERS`). Prints a table; writes data/bench/transport.json.

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

const PAYLOAD_MB: usize = 50;
const REPS: usize = 9;

fn brokers() -> String {
    std::env::var("HERMES_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// One 50 MB transfer through our transport; seconds from first send to full receipt.
/// With `keyed`, every record carries an HMAC-SHA256 tag (the default of a
/// run); without, a CRC-32 (`kafka.insecure`).
async fn ours(cfg: &KafkaConfig, payload: &[u8], keyed: bool) -> anyhow::Result<f64> {
    let run = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let key = keyed
        .then(|| HmacKey::from_bytes(&[0x42; 32]))
        .transpose()?;
    let tx = Transport::connect_with_key(cfg, &run, "bench", key).await?;
    tx.create_run_topics().await?;
    let topic = tx.topics().model();
    let mut rx = tx
        .receiver(std::slice::from_ref(&topic), "bench-rx", StartAt::Beginning)
        .await?;
    // Warm-up: connections and the idempotent producer id are set up outside the timing.
    tx.send_payload(&topic, "k", MessageKind::Model, b"warm-up")
        .await?;
    rx.recv_timeout(Duration::from_secs(30))
        .await?
        .ok_or_else(|| anyhow::anyhow!("warm-up lost"))?;
    let start = Instant::now();
    let (sent, got) = tokio::join!(
        tx.send_payload(&topic, "k", MessageKind::Model, payload),
        rx.recv_timeout(Duration::from_secs(300))
    );
    sent?;
    let got = got?.ok_or_else(|| anyhow::anyhow!("payload did not arrive"))?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(got.payload.len() == payload.len(), "size differs");
    tx.delete_topics(&tx.topics().run_topics()).await?;
    Ok(secs)
}

/// The same bytes as plain records of the same size, no envelope, no digest.
async fn plain(cfg: &KafkaConfig, payload: &[u8]) -> anyhow::Result<f64> {
    let run = format!("bench-plain-{}", uuid::Uuid::new_v4().simple());
    let admin = Transport::connect_with_key(cfg, &run, "bench", None).await?;
    admin.create_run_topics().await?;
    let topic = admin.topics().model();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", &cfg.compression)
        .set("linger.ms", "5")
        .set("message.max.bytes", "1000000")
        .create()?;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .set("group.id", "bench-plain")
        .set("enable.auto.commit", "false")
        .set("max.partition.fetch.bytes", (8 * 1024 * 1024).to_string())
        .set("fetch.max.bytes", (64 * 1024 * 1024).to_string())
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let chunks: Vec<&[u8]> = payload.chunks(cfg.chunk_bytes).collect();
    let expected = chunks.len();
    // Warm-up, as for ours.
    producer
        .send(
            FutureRecord::to(&topic).key("k").payload("warm-up"),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| e)?;
    consumer.recv().await?;
    let start = Instant::now();
    let send = async {
        let futs = chunks.iter().map(|c| {
            producer.send(
                FutureRecord::to(&topic).key("k").payload(*c),
                Timeout::After(Duration::from_secs(60)),
            )
        });
        for r in futures::future::join_all(futs).await {
            r.map_err(|(e, _)| e)?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let recv = async {
        let mut buf = Vec::with_capacity(payload.len());
        for _ in 0..expected {
            let m = consumer.recv().await?;
            buf.extend_from_slice(m.payload().unwrap_or_default());
        }
        Ok::<_, anyhow::Error>(buf)
    };
    let (s, r) = tokio::join!(send, recv);
    s?;
    let buf = r?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(buf.len() == payload.len(), "size differs");
    admin.delete_topics(&admin.topics().run_topics()).await?;
    Ok(secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let cfg = KafkaConfig {
        brokers: brokers(),
        ..KafkaConfig::default()
    };
    let payload: Vec<u8> = (0..PAYLOAD_MB * 1024 * 1024)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mb = payload.len() as f64 / 1e6;
    let (mut t_ours, mut t_keyed, mut t_plain) = (Vec::new(), Vec::new(), Vec::new());
    let bar = indicatif::ProgressBar::new((REPS * 3) as u64);
    // Interleaved so drift (page cache, JIT of the broker) hits all alike.
    for _ in 0..REPS {
        t_plain.push(plain(&cfg, &payload).await?);
        bar.inc(1);
        t_ours.push(ours(&cfg, &payload, false).await?);
        bar.inc(1);
        t_keyed.push(ours(&cfg, &payload, true).await?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let plain_mbs = mb / support::median(&t_plain);
    let ours_mbs = mb / support::median(&t_ours);
    let keyed_mbs = mb / support::median(&t_keyed);
    let ratio = ours_mbs / plain_mbs;
    let keyed_ratio = keyed_mbs / plain_mbs;
    println!("transport: {PAYLOAD_MB} MB payload, chunk {} KiB, compression {}, {REPS} runs each (median)", cfg.chunk_bytes / 1024, cfg.compression);
    println!(
        "{:<36} {:>10} {:>10} {:>8}",
        "path", "MB/s", "seconds", "ratio"
    );
    for (name, mbs, t) in [
        ("plain rdkafka", plain_mbs, &t_plain),
        ("common::transport, CRC (insecure)", ours_mbs, &t_ours),
        ("common::transport, HMAC-SHA256", keyed_mbs, &t_keyed),
    ] {
        println!(
            "{:<36} {:>10.1} {:>10.3} {:>8.3}",
            name,
            mbs,
            support::median(t),
            mbs / plain_mbs
        );
    }
    println!("ratio ours/plain: {ratio:.3} insecure, {keyed_ratio:.3} keyed (target >= 0.95)");
    let report = serde_json::json!({
        "bench": "transport",
        "inputs": {"payload_mb": PAYLOAD_MB, "chunk_bytes": cfg.chunk_bytes, "compression": cfg.compression, "reps": REPS, "brokers": cfg.brokers},
        "machine": support::machine(),
        "seconds": {"plain": t_plain, "ours": t_ours, "ours_keyed": t_keyed},
        "mb_per_s": {"plain": plain_mbs, "ours": ours_mbs, "ours_keyed": keyed_mbs},
        "ratio_ours_over_plain": ratio,
        "ratio_keyed_over_plain": keyed_ratio,
    });
    let path = support::write_report("transport", &report)?;
    println!("wrote {}", path.display());
    Ok(())
}
