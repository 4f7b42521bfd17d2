//! Learning: the 784-128-64-10 MLP, trained by the Rust engine alone on
//! mnist_5k (4,000 train / 1,000 test, stratified, fixed seed), reaches at
//! least 90% test accuracy within 10 epochs. Needs examples/prepare_data.sh
//! (the data) and examples/build_artifacts.sh (the artifacts).

mod engine_support;

use std::path::Path;

use common::data::csv::{load_csv, CsvOptions};
use common::data::{BatchOptions, Batches, Dataset, Limits, Shard, Split, SplitSpec};
use common::engine::{AdamWConfig, Batch, Engine, EngineConfig, OptimizerConfig};

const SEED: u64 = 7;
const TARGET: f32 = 0.90;
const MAX_EPOCHS: u64 = 10;

fn mnist() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist/mnist_5k.csv.gz");
    assert!(
        path.is_file(),
        "{} is missing: run examples/prepare_data.sh",
        path.display()
    );
    let mut ds = load_csv(&path, &CsvOptions::mnist_5k(), &Limits::default()).unwrap();
    ds.scale_to_unit(255.0).unwrap();
    ds
}

/// Accuracy and mean loss over a shard, weighting each batch by its counted samples.
fn evaluate(engine: &mut Engine, ds: &Dataset, shard: &Shard) -> (f32, f32) {
    let (mut correct, mut counted, mut loss_sum) = (0usize, 0usize, 0f64);
    for b in Batches::new(ds, shard, BatchOptions::sequential(250), 0).unwrap() {
        let e = engine
            .evaluate(&Batch::new(b.features(), b.labels()))
            .unwrap();
        correct += e.correct;
        counted += e.counted;
        loss_sum += f64::from(e.loss) * e.counted as f64;
    }
    (
        correct as f32 / counted as f32,
        (loss_sum / counted as f64) as f32,
    )
}

#[test]
fn mlp_reaches_90_percent_on_mnist_5k_within_10_epochs() {
    let ds = mnist();
    let split = Split::stratified(
        ds.labels(),
        SplitSpec::Counts {
            train: 4000,
            validation: 0,
            test: 1000,
        },
        SEED,
    )
    .unwrap();
    assert_eq!((split.train.len(), split.test.len()), (4000, 1000));
    let config = EngineConfig {
        seed: SEED,
        optimizer: OptimizerConfig::AdamW(AdamWConfig {
            lr: 1e-3,
            ..AdamWConfig::default()
        }),
        ..EngineConfig::default()
    };
    let mut engine = Engine::load(&engine_support::artifacts("mlp"), &config).unwrap();
    let (acc0, _) = evaluate(&mut engine, &ds, &split.test);
    println!("before training: test accuracy {:.1}%", acc0 * 100.0);

    let mut reached = None;
    for epoch in 0..MAX_EPOCHS {
        let options = BatchOptions::shuffled(64, SEED);
        let mut train_loss = 0f64;
        let mut steps = 0;
        for b in Batches::new(&ds, &split.train, options, epoch).unwrap() {
            train_loss += f64::from(
                engine
                    .train_step(&Batch::new(b.features(), b.labels()))
                    .unwrap(),
            );
            steps += 1;
        }
        let (acc, loss) = evaluate(&mut engine, &ds, &split.test);
        println!(
            "epoch {}: train loss {:.4}, test loss {loss:.4}, test accuracy {:.1}%",
            epoch + 1,
            train_loss / f64::from(steps),
            acc * 100.0
        );
        if acc >= TARGET {
            reached = Some((epoch + 1, acc));
            break;
        }
    }
    match reached {
        Some((epochs, acc)) => println!(
            "reached {:.1}% test accuracy after {epochs} epoch(s)",
            acc * 100.0
        ),
        None => panic!(
            "test accuracy stayed below {}% for {MAX_EPOCHS} epochs",
            TARGET * 100.0
        ),
    }
}
