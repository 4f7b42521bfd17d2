//! The fuzz targets of `tests/fuzzing` on a small, fixed corpus run: every
//! seed is a valid encoding, and a few thousand mutated inputs per target
//! (deterministic seed) neither panic, nor break a target's property, nor
//! grow the heap past its budget. The long run is `benches/fuzz.rs`.

mod fuzzing;

use fuzzing::{targets, Settings, Target};

#[global_allocator]
static ALLOC: fuzzing::CountingAlloc = fuzzing::CountingAlloc;

/// Inputs per target, seeds included: a few seconds in all in a debug build.
const INPUTS: u64 = 4000;

/// Fixed, so that CI runs the same inputs every time.
const SEED: u64 = 0x4845_524D_4553;

fn corpus_run(target: Target) {
    let settings = Settings {
        inputs: INPUTS,
        seed: SEED,
        time_limit: None,
    };
    let report = fuzzing::fuzz(&target, &settings);
    assert_eq!(report.inputs, INPUTS);
    assert_eq!(
        report.crash_count,
        0,
        "{} crashing inputs; first of each kind:\n{}",
        report.crash_count,
        report.describe_crashes()
    );
    // The mutations reached past the first checks: more than one outcome.
    assert!(report.outcomes.len() > 2, "{:?}", report.outcomes);
}

/// Every seed is accepted as it is, so mutations start from valid encodings.
#[test]
fn every_seed_is_a_valid_encoding() {
    for target in targets::all() {
        for (i, seed) in (target.seeds)().iter().enumerate() {
            let label = fuzzing::replay(&target, seed)
                .unwrap_or_else(|e| panic!("{} seed {i} crashes: {e}", target.name));
            assert!(
                label.starts_with("ok") || label == "completed",
                "{} seed {i} is rejected: {label}",
                target.name
            );
        }
    }
}

macro_rules! corpus_tests {
    ($($test:ident => $target:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                corpus_run(targets::$target);
            }
        )*
    };
}

corpus_tests! {
    envelope => ENVELOPE,
    chunk_reassembly => CHUNK_REASSEMBLY,
    protocol_status => PROTOCOL_STATUS,
    protocol_update => PROTOCOL_UPDATE,
    protocol_logs => PROTOCOL_LOGS,
    protocol_control => PROTOCOL_CONTROL,
    protocol_model => PROTOCOL_MODEL,
    protocol_assignment => PROTOCOL_ASSIGNMENT,
    shard_wire => SHARD_WIRE,
    manifest => MANIFEST,
    config => CONFIG,
}

#[test]
fn every_target_has_a_corpus_test() {
    assert_eq!(targets::all().len(), 11);
}
