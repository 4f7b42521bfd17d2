//! The transport against a real Kafka broker: large payloads, ordering, and
//! every kind of bad record rejected with a counted reason.

mod support;

use std::time::Duration;

use common::auth::HmacKey;
use common::chunking::{self, Chunk};
use common::envelope::{EnvelopeCodec, MessageKind};
use common::transport::{Delivery, Receiver, StartAt, Transport};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;

async fn recv_one(rx: &mut Receiver, wait: Duration) -> Option<Delivery> {
    rx.recv_timeout(wait).await.expect("receiver keeps working")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_round_trip_byte_identical() {
    let cfg = support::kafka_config();
    let run = support::unique_run("big");
    let tx = Transport::connect_with_key(&cfg, &run, "sender", None)
        .await
        .expect("connect");
    tx.create_run_topics().await.expect("topics");
    let topic = tx.topics().model();
    let mut rx = tx
        .receiver(std::slice::from_ref(&topic), "big-rx", StartAt::Beginning)
        .await
        .expect("receiver");

    let payload: Vec<u8> = (0..50 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let report = tx
        .send_payload(&topic, "k", MessageKind::Model, &payload)
        .await
        .expect("send");
    assert!(
        report.records >= 100,
        "50 MB must be chunked, got {} records",
        report.records
    );

    let got = recv_one(&mut rx, Duration::from_secs(120))
        .await
        .expect("delivered");
    assert_eq!(got.kind, MessageKind::Model);
    assert_eq!(got.sender, "sender");
    assert_eq!(got.sequence, report.sequence);
    assert_eq!(got.payload.len(), payload.len());
    assert!(got.payload == payload, "payload differs");
    assert_eq!(rx.buffered_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_small_messages_keep_per_key_order() {
    let cfg = support::kafka_config();
    let run = support::unique_run("order");
    let tx = Transport::connect_with_key(&cfg, &run, "sender", None)
        .await
        .expect("connect");
    tx.create_run_topics().await.expect("topics");
    let topic = tx.topics().updates(); // several partitions
    let mut rx = tx
        .receiver(std::slice::from_ref(&topic), "order-rx", StartAt::Beginning)
        .await
        .expect("receiver");

    let keys = ["a", "b", "c", "d"];
    for i in 0..1000u32 {
        let key = keys[(i % 4) as usize];
        tx.send(&topic, key, MessageKind::Update, &(key.to_string(), i))
            .await
            .expect("send");
    }
    let mut last: std::collections::HashMap<String, u32> = Default::default();
    let mut count = 0;
    while count < 1000 {
        let d = recv_one(&mut rx, Duration::from_secs(30))
            .await
            .expect("all 1000 arrive");
        let (key, i): (String, u32) = d.decode(1024).expect("decodes");
        if let Some(prev) = last.insert(key.clone(), i) {
            assert!(i > prev, "key {key}: {i} arrived after {prev}");
        }
        count += 1;
    }
    assert_eq!(last.len(), 4);
    assert_eq!(tx.metrics().snapshot().messages_delivered, 1000);
}

/// Produces raw bytes, bypassing our transport (as a broken or hostile client would).
async fn produce_raw(brokers: &str, topic: &str, records: &[Vec<u8>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("raw producer");
    for r in records {
        producer
            .send(
                FutureRecord::to(topic).key("x").payload(r),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("raw send");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_counted_and_skipped() {
    let mut cfg = support::kafka_config();
    cfg.reassembly_timeout_secs = 2;
    cfg.max_payload_bytes = 10 * 1024 * 1024;
    let run = support::unique_run("bad");
    let key = HmacKey::from_bytes(b"0123456789abcdef0123456789abcdef").expect("key");
    let tx = Transport::connect_with_key(&cfg, &run, "good", Some(key.clone()))
        .await
        .expect("connect");
    tx.create_run_topics().await.expect("topics");
    let topic = tx.topics().status();
    let mut rx = tx
        .receiver(std::slice::from_ref(&topic), "bad-rx", StartAt::Beginning)
        .await
        .expect("receiver");

    let good = EnvelopeCodec::new(run.clone(), Some(key.clone()), 1 << 20);
    let valid = good.encode(MessageKind::Status, "w", 1, b"hello");
    let mut wrong_magic = valid.clone();
    wrong_magic[0] ^= 0xff;
    let mut wrong_version = valid.clone();
    wrong_version[4] = 0x7f;
    let foreign_run = EnvelopeCodec::new("another-run", Some(key.clone()), 1 << 20).encode(
        MessageKind::Status,
        "w",
        1,
        b"x",
    );
    let other_key = HmacKey::from_bytes(b"ffffffffffffffffffffffffffffffff").expect("key");
    let bad_tag = EnvelopeCodec::new(run.clone(), Some(other_key), 1 << 20).encode(
        MessageKind::Status,
        "w",
        1,
        b"x",
    );
    let untagged =
        EnvelopeCodec::new(run.clone(), None, 1 << 20).encode(MessageKind::Status, "w", 1, b"x");

    // A chunk that claims a payload far over the limit.
    let huge = Chunk {
        transfer_id: [1; 16],
        index: 0,
        count: 2,
        total_len: 1 << 40,
        digest: [0; 32],
        inner_kind: MessageKind::Model,
        data: vec![0; 16],
    };
    let huge = good.encode(MessageKind::Chunk, "w", 2, &huge.encode());
    // A transfer missing its last chunk (times out, memory freed).
    let body: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    let partial: Vec<Vec<u8>> = chunking::split(&body, 1024, MessageKind::Model)
        .iter()
        .take(2)
        .map(|c| good.encode(MessageKind::Chunk, "w", 3, &c.encode()))
        .collect();
    // A transfer with one chunk whose bytes do not match its digest: that
    // chunk is refused, and the transfer, waiting for a good copy, expires.
    let mut corrupt = chunking::split(&body, 1024, MessageKind::Model);
    corrupt[1].data[5] ^= 1;
    let corrupt: Vec<Vec<u8>> = corrupt
        .iter()
        .map(|c| good.encode(MessageKind::Chunk, "w", 4, &c.encode()))
        .collect();

    let mut records = vec![
        b"\x00\x01random garbage that is no envelope at all".to_vec(),
        wrong_magic,
        wrong_version,
        foreign_run,
        bad_tag,
        untagged,
        huge,
    ];
    records.extend(partial);
    records.extend(corrupt);
    records.push(valid);
    produce_raw(&cfg.brokers, &topic, &records).await;

    let d = recv_one(&mut rx, Duration::from_secs(30))
        .await
        .expect("the valid record still arrives");
    assert_eq!(d.payload, b"hello");
    assert!(rx.buffered_bytes() > 0, "the partial transfer is held");
    // Nothing else is delivered; the partial transfer expires.
    assert!(recv_one(&mut rx, Duration::from_secs(4)).await.is_none());
    assert_eq!(rx.buffered_bytes(), 0, "expired transfer freed");

    let m = tx.metrics();
    // The random bytes fail at the first check, the magic, like the wrong magic.
    assert_eq!(m.rejected("bad_magic"), 2, "{:?}", m.snapshot().rejected);
    for reason in [
        "unsupported_version",
        "wrong_run_id",
        "bad_tag",
        "missing_tag",
        "chunk_declared_size_too_large",
        "chunk_digest_mismatch",
    ] {
        assert_eq!(
            m.rejected(reason),
            1,
            "reason {reason}: {:?}",
            m.snapshot().rejected
        );
    }
    assert_eq!(
        m.rejected("transfer_timeout"),
        2,
        "the partial and the corrupt transfer"
    );
    let total: u64 = m.snapshot().rejected.values().sum();
    assert_eq!(
        total,
        10,
        "every bad record counted once: {:?}",
        m.snapshot().rejected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_a_clear_error() {
    let mut cfg = support::kafka_config();
    cfg.brokers = "127.0.0.1:1".into();
    cfg.connect_timeout_secs = 2;
    let err = match Transport::connect_with_key(&cfg, "r", "n", None).await {
        Ok(_) => panic!("must not connect"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:1") && msg.contains("unreachable"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_auto_fits_the_cluster_and_too_many_replicas_are_named() {
    use common::config::ReplicationFactor;
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let cfg = support::kafka_config();
    assert_eq!(cfg.replication_factor, ReplicationFactor::Auto);
    let run = support::unique_run("replication");
    let tx = Transport::connect_with_key(&cfg, &run, "creator", None)
        .await
        .expect("connect");
    tx.create_run_topics().await.expect("topics");

    let meta: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()
        .expect("metadata client");
    let md = meta
        .fetch_metadata(Some(&tx.topics().updates()), Duration::from_secs(10))
        .expect("metadata");
    let brokers = md.brokers().len();
    let want = brokers.clamp(1, 3);
    let updates = &md.topics()[0];
    assert_eq!(updates.partitions().len(), cfg.update_partitions as usize);
    for p in updates.partitions() {
        assert_eq!(p.replicas().len(), want, "partition {}", p.id());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &cfg.brokers)
        .create()
        .expect("admin");
    let name = tx.topics().updates();
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(&name)], &AdminOptions::new())
        .await
        .expect("describe");
    let min_isr = described[0]
        .as_ref()
        .expect("config")
        .get("min.insync.replicas")
        .and_then(|e| e.value.clone());
    let expected = if want >= 3 { "2" } else { "1" };
    assert_eq!(min_isr.as_deref(), Some(expected));

    // More replicas than brokers: an error that says what to change.
    let too_many = i16::try_from(brokers + 1).expect("broker count");
    let fixed = common::config::KafkaConfig {
        replication_factor: ReplicationFactor::Fixed(too_many),
        ..cfg.clone()
    };
    let tx = Transport::connect_with_key(&fixed, &run, "creator2", None)
        .await
        .expect("connect");
    let spec = tx.topic_spec(format!("{name}-too-many"), 1);
    let msg = tx
        .create_topics(&[spec])
        .await
        .expect_err("cannot have more replicas than brokers")
        .to_string();
    assert!(
        msg.contains(&format!("kafka.replication_factor = {too_many}"))
            && msg.contains(&format!("the cluster has {brokers} broker(s)"))
            && msg.contains("\"auto\""),
        "{msg}"
    );
    tx.delete_topics(&tx.topics().run_topics())
        .await
        .expect("clean up");
}
