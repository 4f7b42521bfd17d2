use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Values in [`layout`].
const N: usize = 1204;
use crate::engine::manifest::ParameterSpec;

fn layout() -> RowLayout {
    // A 4x300 weight (4 rows: 1,200 values is not "small") and a bias of 4
    // (one row): 1,204 values.
    RowLayout::new(&[
        ParameterSpec {
            name: "w".into(),
            shape: vec![4, 300],
            offset: 0,
            numel: 1200,
        },
        ParameterSpec {
            name: "b".into(),
            shape: vec![4],
            offset: 1200,
            numel: 4,
        },
    ])
    .expect("layout")
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

#[test]
fn kinds_parse_and_print() {
    for s in ["none", "sign_ef", "int8", "topk:0.05"] {
        let k: Compression = s.parse().expect(s);
        assert_eq!(k.to_string(), s);
    }
    assert_eq!(
        "topk".parse::<Compression>(),
        Ok(Compression::TopK {
            fraction: DEFAULT_TOPK_FRACTION
        })
    );
    assert!(matches!(
        "gzip".parse::<Compression>(),
        Err(CompressionError::UnknownKind(_))
    ));
    assert_eq!(
        "topk:0".parse::<Compression>(),
        Err(CompressionError::BadFraction(0.0))
    );
    assert!("topk:1.5".parse::<Compression>().is_err());
    let json: Compression = serde_json::from_str("\"int8\"").expect("json");
    assert_eq!(json, Compression::Int8);
    assert!(serde_json::from_str::<Compression>("\"bits\"").is_err());
}

#[test]
fn none_is_exact() {
    let x = random(N, 1);
    assert_eq!(decode(&encode(Compression::None, &x, None), N), Ok(x));
}

#[test]
fn sign_keeps_signs_and_each_tensors_l1_norm() {
    let x = random(N, 2);
    let l = layout();
    let e = encode(Compression::SignEf, &x, Some(&l));
    let Encoded::Sign { ref segments, .. } = e else {
        panic!("not a sign encoding: {e:?}")
    };
    assert_eq!(segments, &vec![1200, 4], "one scale per tensor");
    let y = decode(&e, N).expect("decode");
    for (a, b) in x.iter().zip(&y) {
        assert_eq!(a.is_sign_positive() && *a > 0.0, *b > 0.0);
    }
    for r in [0..1200, 1200..N] {
        let l1x: f32 = x[r.clone()].iter().map(|v| v.abs()).sum();
        let l1y: f32 = y[r].iter().map(|v| v.abs()).sum();
        assert!((l1x - l1y).abs() < 1e-3 * l1x.max(1.0), "{l1x} vs {l1y}");
    }
}

#[test]
fn int8_error_is_at_most_half_a_step_of_its_row() {
    let mut x = random(N, 3);
    x[305] = 40.0; // one large value in row 1 only coarsens row 1
    let l = layout();
    let e = encode(Compression::Int8, &x, Some(&l));
    let y = decode(&e, N).expect("decode");
    for row in l.rows() {
        let max = x[row.range.clone()]
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()));
        let step = max / 127.0;
        for at in row.range.clone() {
            assert!(
                (x[at] - y[at]).abs() <= step / 2.0 + 1e-6,
                "value {at}: {} vs {}",
                x[at],
                y[at]
            );
        }
    }
    // Row 0 is unaffected by row 1's outlier.
    assert!((x[0] - y[0]).abs() <= 1.0 / 254.0 + 1e-6);
}

#[test]
fn topk_keeps_the_largest_values_exactly() {
    let x = random(1000, 4);
    let e = encode(Compression::TopK { fraction: 0.05 }, &x, None);
    let y = decode(&e, 1000).expect("decode");
    let kept: Vec<usize> = (0..1000).filter(|&i| y[i] != 0.0).collect();
    assert_eq!(kept.len(), 50);
    let smallest_kept = kept.iter().map(|&i| x[i].abs()).fold(f32::MAX, f32::min);
    for i in 0..1000 {
        if y[i] != 0.0 {
            assert_eq!(y[i], x[i]);
        } else {
            assert!(x[i].abs() <= smallest_kept);
        }
    }
}

#[test]
fn error_feedback_delays_but_loses_nothing() {
    let l = layout();
    for kind in [
        Compression::SignEf,
        Compression::Int8,
        Compression::TopK { fraction: 0.1 },
    ] {
        let mut ef = ErrorFeedback::default();
        let mut true_sum = vec![0f64; N];
        let mut sent_sum = vec![0f64; N];
        for step in 0..100 {
            let u = random(N, 100 + step);
            let e = ef.encode(kind, &u, Some(&l));
            let sent = decode(&e, N).expect("decode");
            for i in 0..N {
                true_sum[i] += f64::from(u[i]);
                sent_sum[i] += f64::from(sent[i]);
            }
        }
        for i in 0..N {
            let r = f64::from(ef.residual()[i]);
            assert!(
                (sent_sum[i] + r - true_sum[i]).abs() < 1e-3,
                "{kind}: value {i}: sent {} + residual {r} != true {}",
                sent_sum[i],
                true_sum[i]
            );
            // The residual stays bounded: it is not the whole history.
            assert!(r.abs() < 5.0, "{kind}: residual {r} grew");
        }
    }
}

#[test]
fn bad_encodings_are_refused_by_name() {
    let x = random(N, 5);
    let e = encode(Compression::Int8, &x, Some(&layout()));
    assert_eq!(
        decode(&e, N + 1),
        Err(CompressionError::Length {
            got: N,
            expected: N + 1
        })
    );
    let Encoded::Int8 {
        segments,
        mut scales,
        values,
    } = e
    else {
        panic!("int8")
    };
    scales[1] = f32::NAN;
    let bad = Encoded::Int8 {
        segments: segments.clone(),
        scales,
        values: values.clone(),
    };
    assert!(matches!(
        decode(&bad, N),
        Err(CompressionError::NotFinite {
            what: "scale",
            index: 1,
            ..
        })
    ));
    let short = Encoded::Int8 {
        segments,
        scales: vec![1.0; 5],
        values: values[..N - 1].to_vec(),
    };
    assert!(matches!(
        decode(&short, N),
        Err(CompressionError::Size { .. })
    ));
    let unordered = Encoded::Sparse {
        len: N as u32,
        positions: vec![3, 3],
        values: vec![1.0, 2.0],
    };
    assert_eq!(
        decode(&unordered, N),
        Err(CompressionError::Position {
            index: 1,
            position: 3
        })
    );
    let outside = Encoded::Sparse {
        len: N as u32,
        positions: vec![N as u32],
        values: vec![1.0],
    };
    assert!(decode(&outside, N).is_err());
    let huge = Encoded::Sign {
        segments: vec![u32::MAX, u32::MAX, 2],
        scales: vec![1.0; 3],
        bits: vec![0; N.div_ceil(8)],
    };
    assert!(matches!(
        decode(&huge, N),
        Err(CompressionError::Length { .. })
    ));
}

#[test]
fn compressed_sizes_on_the_wire() {
    let x = random(109_386, 6);
    let size = |k| bincode_len(&encode(k, &x, None));
    let dense = size(Compression::None);
    assert!(size(Compression::SignEf) * 20 < dense);
    assert!(size(Compression::Int8) * 3 < dense);
    assert!(size(Compression::TopK { fraction: 0.01 }) * 40 < dense);
}

fn bincode_len(e: &Encoded) -> usize {
    bincode::serialize(e).expect("encode").len()
}
