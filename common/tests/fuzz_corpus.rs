//! The fuzz targets of `tests/fuzzing` on a small, fixed corpus run: every
//! seed is a valid encoding, and a few thousand mutated inputs per target
//! (deterministic seed) neither panic, nor break a target's property, nor
//! grow the heap past its budget. The long run is `benches/fuzz.rs`.

mod fuzzing;

use fuzzing::{targets, Settings, Target};

#[global_allocator]
static ALLOC: fuzzing::CountingAlloc = fuzzing::CountingAlloc;

/// Inputs per target, seeds included: a few seconds in all in a debug build.
const INPUTS: u64 = 5000;

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

/// Inputs that crashed a target before its fix (each fix also has a unit
/// test next to the code it changed).
#[test]
fn past_crashes_stay_fixed() {
    let manifest = |edit: fn(&mut serde_json::Value)| {
        let mut v = targets::manifest_value();
        edit(&mut v);
        serde_json::to_vec(&v).expect("json")
    };
    let cases: Vec<(Target, Vec<u8>, &str)> = vec![
        // `attempt to multiply with overflow` in TensorSpec::per_sample_len.
        (
            targets::MANIFEST,
            manifest(|v| v["inputs"][0]["shape"] = serde_json::json!([-1, 1u64 << 32, 1u64 << 32])),
            "more elements than fit",
        ),
        // `attempt to multiply with overflow` in the parameter check; in
        // release builds the product wrapped to 0 and `numel: 0` passed.
        (
            targets::MANIFEST,
            manifest(|v| {
                v["parameters"][0]["shape"] = serde_json::json!([1u64 << 32, 1u64 << 32]);
                v["parameters"][0]["numel"] = 0.into();
                v["parameters"][1]["offset"] = 0.into();
            }),
            "more elements than fit",
        ),
        // A -0.0 among byte values came back as +0.0 after a round trip.
        (
            targets::SHARD_WIRE,
            hex::decode(
                "48445331010001000200000003000000020000000000803f00000000010000000100000000000080\
                 0000004000000000000000430000e0400000803f",
            )
            .expect("hex"),
            "ok",
        ),
    ];
    for (target, input, expected) in cases {
        let label = fuzzing::replay(&target, &input)
            .unwrap_or_else(|e| panic!("{} still crashes: {e}", target.name));
        assert_eq!(label, expected, "{}", target.name);
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
    agents_control => AGENTS_CONTROL,
    agents_status => AGENTS_STATUS,
    shard_wire => SHARD_WIRE,
    manifest => MANIFEST,
    config => CONFIG,
}

#[test]
fn every_target_has_a_corpus_test() {
    assert_eq!(targets::all().len(), 13);
}

/// The same seed gives the same inputs, so a crash reproduces.
#[test]
fn runs_are_deterministic() {
    let settings = Settings {
        inputs: 2000,
        seed: 7,
        time_limit: None,
    };
    let a = fuzzing::fuzz(&targets::ENVELOPE, &settings);
    let b = fuzzing::fuzz(&targets::ENVELOPE, &settings);
    assert_eq!(a.outcomes, b.outcomes);
    assert_eq!(a.corpus, b.corpus);
}

fn seeds_one() -> Vec<Vec<u8>> {
    vec![vec![1, 2, 3]]
}

fn panics_on_a_zero(input: &[u8]) -> &'static str {
    assert!(!input.contains(&0), "a zero byte");
    "ok"
}

fn allocates_per_byte_squared(input: &[u8]) -> &'static str {
    let v = vec![1u8; input.len() * input.len() * 64];
    if v.len() > 1 << 20 {
        "big"
    } else {
        "ok"
    }
}

/// The harness itself: panics and heap growth past the budget are crashes.
#[test]
fn panics_and_unbounded_allocation_are_caught() {
    let settings = Settings {
        inputs: 3000,
        seed: 1,
        time_limit: None,
    };
    let panicky = Target {
        name: "self_test_panic",
        about: "panics on a zero byte",
        seeds: seeds_one,
        dictionary: &[],
        max_len: 64,
        alloc_fixed: 1 << 20,
        alloc_per_byte: 0,
        structured: None,
        run: panics_on_a_zero,
    };
    let report = fuzzing::fuzz(&panicky, &settings);
    assert!(report.crash_count > 0);
    let crash = &report.crashes[0];
    assert_eq!(crash.kind, fuzzing::CrashKind::Panic);
    assert!(crash.message.contains("a zero byte"), "{}", crash.message);
    assert!(crash.input.contains(&0));
    let replayed = fuzzing::replay(&panicky, &crash.input).expect_err("still panics");
    assert!(replayed.contains("a zero byte"), "{replayed}");

    let greedy = Target {
        name: "self_test_alloc",
        about: "allocates 64 × len² bytes",
        run: allocates_per_byte_squared,
        max_len: 512,
        ..panicky
    };
    let report = fuzzing::fuzz(&greedy, &settings);
    assert!(report.crash_count > 0);
    assert_eq!(report.crashes[0].kind, fuzzing::CrashKind::Alloc);
    assert!(report.peak_alloc > 1 << 20);
}
