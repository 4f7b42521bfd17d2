//! Bad input gets a clear error, never a panic: missing artifact files,
//! manifests that do not match the graphs, unlowered training graphs, bad
//! batches, bad parameter buffers. Uses a scratch copy of the real MLP
//! artifacts built by `examples/build_artifacts.sh`.

mod engine_support;

use std::path::Path;

use common::engine::{Batch, Engine, EngineConfig, EngineError, OptimizerConfig, SgdConfig};
use engine_support::{engine, scratch_copy, Reference};
use serde_json::Value;

fn load(dir: &Path) -> Result<Engine, EngineError> {
    Engine::load(dir, &EngineConfig::default())
}

fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let path = dir.join("manifest.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

fn message(result: Result<Engine, EngineError>) -> (EngineError, String) {
    match result {
        Ok(_) => panic!("loading succeeded where it must fail"),
        Err(e) => {
            let text = e.to_string();
            println!("{text}");
            assert!(!text.contains('\n'), "errors are one line: {text}");
            (e, text)
        }
    }
}

#[test]
fn missing_artifact_files_say_to_build_them() {
    for file in [
        "training_lowered.onnx",
        "eval_lowered.onnx",
        "initial_parameters.bin",
        "manifest.json",
    ] {
        let dir = scratch_copy("mlp");
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let (err, text) = message(load(dir.path()));
        assert!(
            matches!(err, EngineError::ArtifactMissing { .. }),
            "{file}: {err:?}"
        );
        assert!(
            text.contains(file) && text.contains("examples/build_artifacts.sh"),
            "{text}"
        );
    }
    let (err, _) = message(load(Path::new("/nonexistent/artifacts/mlp")));
    assert!(matches!(err, EngineError::ArtifactMissing { .. }));
}

#[test]
fn unlowered_training_graph_is_refused_with_the_tool_named() {
    let dir = scratch_copy("mlp");
    edit_manifest(dir.path(), |m| {
        m["training_graph"] = "training_model.onnx".into()
    });
    let (err, text) = message(load(dir.path()));
    match &err {
        EngineError::Unlowered { found, .. } => {
            for needle in [
                "ReluGrad",
                "InPlaceAccumulatorV2",
                "SoftmaxCrossEntropyLossGrad",
                "accumulation.buffer",
                "lazy_reset_grad",
            ] {
                assert!(
                    found.iter().any(|f| f.contains(needle)),
                    "{needle} not reported in {found:?}"
                );
            }
        }
        other => panic!("expected Unlowered, got {other:?}"),
    }
    assert!(text.contains("examples/build_artifacts.sh"), "{text}");
}

#[test]
fn unlowered_cnn_names_its_conv_and_pool_gradients() {
    let dir = scratch_copy("cnn");
    edit_manifest(dir.path(), |m| {
        m["training_graph"] = "training_model.onnx".into()
    });
    let (err, _) = message(load(dir.path()));
    let EngineError::Unlowered { found, .. } = err else {
        panic!("expected Unlowered")
    };
    assert!(
        found.iter().any(|f| f.ends_with("ConvGrad"))
            && found.iter().any(|f| f.ends_with("MaxPoolGrad")),
        "{found:?}"
    );
}

#[test]
fn manifest_that_does_not_match_the_graph_is_named() {
    type Edit = fn(&mut Value);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |m| m["train_outputs"]["gradients"][2]["output"] = "fc2.weight_gradient".into(),
            "fc2.weight_gradient",
        ),
        (
            |m| m["train_outputs"]["loss"] = "the_loss".into(),
            "the_loss",
        ),
        (|m| m["eval_outputs"]["logits"] = "scores".into(), "scores"),
        (
            |m| {
                m["parameters"][5]["name"] = "fc3.b".into();
                m["train_outputs"]["gradients"][5]["parameter"] = "fc3.b".into();
            },
            "fc3.b",
        ),
        (|m| m["inputs"][0]["name"] = "pixels".into(), "pixels"),
        (|m| m["label"]["name"] = "targets".into(), "targets"),
        (
            |m| {
                m["parameters"][5]["shape"] = serde_json::json!([2, 5]);
            },
            "fc3.bias",
        ),
        (
            |m| m["inputs"][0]["shape"] = serde_json::json!([-1, 785]),
            "785",
        ),
        (|m| m["num_classes"] = 12.into(), "logits"),
    ];
    for (edit, needle) in cases {
        let dir = scratch_copy("mlp");
        edit_manifest(dir.path(), edit);
        let (err, text) = message(load(dir.path()));
        assert!(
            matches!(err, EngineError::ManifestMismatch { .. }),
            "{needle}: {err:?}"
        );
        assert!(text.contains(needle), "`{needle}` not named in: {text}");
    }
}

#[test]
fn parameter_file_of_the_wrong_size_is_refused() {
    let dir = scratch_copy("mlp");
    let path = dir.path().join("initial_parameters.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 4);
    std::fs::write(&path, bytes).unwrap();
    let (err, text) = message(load(dir.path()));
    assert!(
        matches!(err, EngineError::ManifestMismatch { .. })
            && text.contains("initial_parameters.bin"),
        "{text}"
    );
}

#[test]
fn garbage_manifest_and_graph_are_errors() {
    let dir = scratch_copy("mlp");
    std::fs::write(dir.path().join("manifest.json"), b"{ not json").unwrap();
    let (err, _) = message(load(dir.path()));
    assert!(matches!(err, EngineError::ManifestInvalid { .. }));

    let dir = scratch_copy("mlp");
    std::fs::write(
        dir.path().join("training_lowered.onnx"),
        b"definitely not a protobuf model",
    )
    .unwrap();
    let (err, text) = message(load(dir.path()));
    assert!(
        matches!(err, EngineError::ModelInvalid { .. }) && text.contains("training_lowered.onnx"),
        "{text}"
    );
}

#[test]
fn bad_batches_are_rejected_and_leave_parameters_untouched() {
    let reference = Reference::load("mlp");
    let mut engine = engine(
        "mlp",
        OptimizerConfig::Sgd(SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        }),
    );
    let before = engine.parameters().to_vec();
    let (x, y) = (&reference.input, &reference.labels);

    let short = &x[..x.len() - 784];
    let err = engine.train_step(&Batch::new(short, y)).unwrap_err();
    assert!(
        matches!(err, EngineError::BatchShape { .. }) && err.to_string().contains("63 samples"),
        "{err}"
    );
    let ragged = &x[..x.len() - 3];
    assert!(matches!(
        engine.train_step(&Batch::new(ragged, y)),
        Err(EngineError::BatchShape { .. })
    ));
    assert!(matches!(
        engine.train_step(&Batch::new(&[], &[])),
        Err(EngineError::EmptyBatch)
    ));
    assert!(matches!(
        engine.train_step(&Batch::with_inputs(vec![x, x], y)),
        Err(EngineError::BatchShape { .. })
    ));

    for bad in [10i64, -2, i64::MAX, i64::MIN] {
        let mut labels = y.clone();
        labels[17] = bad;
        let err = engine.train_step(&Batch::new(x, &labels)).unwrap_err();
        assert!(
            matches!(err, EngineError::LabelOutOfRange { index: 17, label, num_classes: 10 } if label == bad),
            "{err}"
        );
        assert!(matches!(
            engine.evaluate(&Batch::new(x, &labels)),
            Err(EngineError::LabelOutOfRange { .. })
        ));
    }

    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut data = x.clone();
        data[5 * 784 + 100] = bad;
        let err = engine.train_step(&Batch::new(&data, y)).unwrap_err();
        assert!(
            matches!(err, EngineError::NonFiniteInput { index, .. } if index == 5 * 784 + 100),
            "{err}"
        );
        println!("{err}");
    }
    assert_eq!(
        engine.parameters(),
        before.as_slice(),
        "a rejected batch changed the parameters"
    );
    assert_eq!(engine.optimizer().steps(), 0);

    // The same engine still trains afterwards.
    engine.train_step(&Batch::new(x, y)).unwrap();
    assert_ne!(engine.parameters(), before.as_slice());
}

#[test]
fn ignored_labels_are_accepted_and_not_counted() {
    let reference = Reference::load("mlp");
    let mut engine = engine("mlp", OptimizerConfig::default());
    let mut labels = reference.labels.clone();
    labels[..10].fill(-1);
    let eval = engine
        .evaluate(&Batch::new(&reference.input, &labels))
        .unwrap();
    assert_eq!(eval.counted, labels.len() - 10);
    let all_ignored = vec![-1i64; labels.len()];
    let (loss, grads) = engine
        .gradients(&Batch::new(&reference.input, &all_ignored))
        .unwrap();
    assert_eq!(loss, 0.0);
    assert!(grads.iter().all(|&g| g == 0.0));
    assert_eq!(
        engine
            .evaluate(&Batch::new(&reference.input, &all_ignored))
            .unwrap()
            .accuracy,
        0.0
    );
}

#[test]
fn parameters_round_trip_and_bad_buffers_are_rejected() {
    let mut engine = engine("mlp", OptimizerConfig::default());
    let n = engine.parameters().len();
    assert_eq!(n, engine.manifest().parameter_count());
    let mut values: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 1e-3).collect();
    engine.set_parameters(&values).unwrap();
    assert_eq!(engine.parameters(), values.as_slice());
    let fc3 = engine.parameter("fc3.bias").unwrap();
    assert_eq!(fc3.shape(), &[10]);
    assert_eq!(
        fc3[[3]],
        values[engine.manifest().parameter("fc3.bias").unwrap().offset + 3]
    );
    let names: Vec<&str> = engine.named_parameters().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "fc3.weight",
            "fc3.bias"
        ]
    );
    assert!(engine.parameter("nope").is_none());

    let err = engine.set_parameters(&values[1..]).unwrap_err();
    assert!(
        matches!(err, EngineError::ParametersInvalid { .. })
            && err.to_string().contains(&n.to_string())
    );
    values[42] = f32::NAN;
    assert!(matches!(
        engine.set_parameters(&values),
        Err(EngineError::ParametersInvalid { .. })
    ));
    assert_ne!(engine.parameters()[42].to_bits(), f32::NAN.to_bits());
}
