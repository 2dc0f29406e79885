//! Tests for the PyTorch checkpoint reader against fixtures written by real
//! torch (see tests/fixtures/torch/make_torch_fixtures.py).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dishcam_import::torch_pickle::{
    read_state_dict, read_state_dict_file, Checkpoint, CheckpointFormat, TensorData, TorchError,
    TorchTensor,
};
use proptest::prelude::*;
use serde_json::Value;

const STATE_DICT_FIXTURES: &[&str] = &["legacy.pth", "legacy_p4.pth", "zip.pth"];
const ALL_FIXTURES: &[&str] = &["legacy.pth", "legacy_p4.pth", "zip.pth", "nested.pth"];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn expected() -> Value {
    serde_json::from_slice(&fixture("expected.json")).expect("expected.json parses")
}

/// Asserts that `tensor` matches the expected.json entry exactly.
fn check_tensor(name: &str, tensor: &TorchTensor, want: &Value) {
    let shape: Vec<usize> = want["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(tensor.shape, shape, "{name}: shape");
    assert_eq!(
        format!("{:?}", tensor.dtype),
        want["dtype"].as_str().unwrap(),
        "{name}: dtype"
    );
    let values: Vec<f64> = want["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(tensor.numel(), values.len(), "{name}: numel");
    assert_eq!(tensor.numel(), shape.iter().product::<usize>(), "{name}");
    match &tensor.data {
        TensorData::F32(got) => {
            assert!(tensor.dtype.is_float(), "{name}");
            // f32_bits holds torch's .float() values bit for bit.
            let bits: Vec<u32> = want["f32_bits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as i32 as u32)
                .collect();
            let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got_bits, bits, "{name}: f32 bit patterns");
            for (i, (&g, &w)) in got.iter().zip(&values).enumerate() {
                // The decimal values only to JSON-reader precision.
                let tol = w.abs() * 1e-15;
                assert!((f64::from(g) - w).abs() <= tol, "{name}[{i}]: {g} vs {w}");
            }
        }
        TensorData::I64(got) => {
            assert!(!tensor.dtype.is_float(), "{name}");
            let ints: Vec<i64> = want["i64"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(got, &ints, "{name}");
            for (i, (&g, &w)) in got.iter().zip(&values).enumerate() {
                assert_eq!(g as f64, w, "{name}[{i}]");
            }
        }
    }
}

fn check_against_expected(file: &str, got: &BTreeMap<String, TorchTensor>, keys: &[String]) {
    let exp = expected();
    let tensors = exp["tensors"].as_object().unwrap();
    let got_keys: Vec<&String> = got.keys().collect();
    let want_keys: Vec<&String> = keys.iter().collect();
    assert_eq!(got_keys, want_keys, "{file}: keys");
    for (name, tensor) in got {
        check_tensor(&format!("{file}:{name}"), tensor, &tensors[name]);
    }
}

#[test]
fn fixtures_match_torch() {
    let exp = expected();
    let all_keys: Vec<String> = exp["tensors"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert!(
        all_keys.len() >= 20,
        "expected.json lists {}",
        all_keys.len()
    );
    for file in STATE_DICT_FIXTURES {
        let bytes = fixture(file);
        let ckpt = Checkpoint::parse(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        let want_format = if file.starts_with("legacy") {
            CheckpointFormat::Legacy
        } else {
            CheckpointFormat::Zip
        };
        assert_eq!(ckpt.format(), want_format, "{file}");
        assert_eq!(ckpt.find_tensor_dict(), Some(vec![]), "{file}");
        let sd = read_state_dict(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_against_expected(file, &sd, &all_keys);

        // Spot checks that do not depend on expected.json.
        assert_eq!(sd["1.num_batches_tracked"].as_i64(), Some(&[7i64][..]));
        assert_eq!(sd["1.num_batches_tracked"].shape, Vec::<usize>::new());
        assert_eq!(sd["transposed"].shape, vec![4, 3]);
        assert_eq!(
            sd["transposed"].as_f32().unwrap()[..4],
            [0.0, 4.0, 8.0, 1.0],
            "{file}: transposed is row-major"
        );
        assert_eq!(
            sd["offset_row"].as_f32(),
            Some(&[4.0f32, 5.0, 6.0, 7.0][..])
        );
        assert_eq!(sd["empty"].shape, vec![0, 3]);
        assert!(sd["empty"].as_f32().unwrap().is_empty());
    }
}

#[test]
fn legacy_and_zip_agree() {
    let a = read_state_dict(&fixture("legacy.pth")).unwrap();
    let b = read_state_dict(&fixture("zip.pth")).unwrap();
    let c = read_state_dict(&fixture("legacy_p4.pth")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
}

#[test]
fn nested_state_dict_is_found() {
    let exp = expected();
    let bytes = fixture("nested.pth");
    let ckpt = Checkpoint::parse(&bytes).unwrap();
    let want_path: Vec<String> = serde_json::from_value(exp["nested_path"].clone()).unwrap();
    assert_eq!(ckpt.find_tensor_dict(), Some(want_path));
    let mut top = ckpt.top_level_keys();
    top.sort();
    assert_eq!(top, ["epoch", "note", "optimizer", "state_dict"]);

    let keys: Vec<String> = serde_json::from_value(exp["nested_keys"].clone()).unwrap();
    let sd = read_state_dict(&bytes).unwrap();
    check_against_expected("nested.pth", &sd, &keys);
    assert_eq!(ckpt.tensor_dict_at(&["state_dict"]).unwrap(), sd);
    // The top level has no tensor values.
    assert!(ckpt.tensor_dict_at(&[]).unwrap().is_empty());
    let err = ckpt.tensor_dict_at(&["nope"]).unwrap_err().to_string();
    assert!(err.contains("'nope'"), "{err}");
    let err = ckpt.tensor_dict_at(&["epoch"]).unwrap_err().to_string();
    assert!(err.contains("not a dict"), "{err}");
}

#[test]
fn read_from_file_and_missing_file() {
    let sd = read_state_dict_file(&fixture_dir().join("zip.pth")).unwrap();
    assert!(sd.contains_key("0.weight"));
    let err = read_state_dict_file(&fixture_dir().join("does-not-exist.pth")).unwrap_err();
    assert!(matches!(err, TorchError::Io { .. }), "{err}");
    assert!(err.to_string().contains("does-not-exist.pth"), "{err}");
}

#[test]
fn error_messages_say_what_and_where() {
    let bytes = fixture("legacy.pth");
    // Cut into the last storage's data.
    let err = read_state_dict(&bytes[..bytes.len() - 3])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("truncated: storage '") && err.contains("file has"),
        "{err}"
    );
    let err = read_state_dict(b"definitely not a checkpoint").unwrap_err();
    assert!(matches!(err, TorchError::NotACheckpoint(_)), "{err}");
    // An unknown opcode right after PROTO in the magic-number pickle.
    let err = read_state_dict(&[0x80, 0x02, 0xfe, b'.']).unwrap_err();
    assert!(
        matches!(
            err,
            TorchError::UnknownOpcode {
                opcode: 0xfe,
                offset: 2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn every_truncation_is_an_error() {
    for file in ALL_FIXTURES {
        let bytes = fixture(file);
        assert!(read_state_dict(&bytes).is_ok(), "{file}");
        for len in 0..bytes.len() {
            if let Ok(sd) = read_state_dict(&bytes[..len]) {
                panic!(
                    "{file} truncated to {len} bytes parsed: {} tensors",
                    sd.len()
                );
            }
        }
    }
}

#[test]
fn every_single_byte_mutation_is_handled() {
    // Exhaustive over positions; a few replacement values each. Any result is
    // fine as long as nothing panics.
    for file in ALL_FIXTURES {
        let bytes = fixture(file);
        let start = std::time::Instant::now();
        let mut ok = 0usize;
        for pos in 0..bytes.len() {
            let orig = bytes[pos];
            for new in [0x00, 0xff, orig ^ 0x01] {
                if new == orig {
                    continue;
                }
                let mut m = bytes.clone();
                m[pos] = new;
                if read_state_dict(&m).is_ok() {
                    ok += 1;
                }
            }
        }
        eprintln!(
            "{file}: {ok} single-byte mutations still parse ({:?})",
            start.elapsed()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_byte_flips_never_panic(
        which in 0..ALL_FIXTURES.len(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
    ) {
        let mut bytes = fixture(ALL_FIXTURES[which]);
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] ^= value | 1;
        }
        let _ = read_state_dict(&bytes);
    }

    #[test]
    fn random_bytes_never_panic(
        prefix in prop::sample::select(vec![&b""[..], b"\x80\x02", b"PK\x03\x04"]),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = prefix.to_vec();
        bytes.extend(body);
        let _ = read_state_dict(&bytes);
    }
}

#[test]
fn efficientnet_lite0_checkpoint() {
    let Some(path) = std::env::var_os("DISHCAM_TEST_LITE0_PTH") else {
        // Written to the real stderr, not eprintln!, so libtest's output
        // capture does not hide it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: set DISHCAM_TEST_LITE0_PTH to efficientnet-lite0-57934424.pth \
             to test a real legacy checkpoint"
        );
        return;
    };
    let path = PathBuf::from(path);
    let start = std::time::Instant::now();
    let sd = read_state_dict_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eprintln!(
        "read {} tensors from {} in {:?}",
        sd.len(),
        path.display(),
        start.elapsed()
    );

    // Reference numbers from torch.load of the same file.
    assert_eq!(sd.len(), 296);
    let floats = sd.values().filter(|t| t.as_f32().is_some()).count();
    assert_eq!(floats, 247);
    assert_eq!(sd.len() - floats, 49);
    assert_eq!(
        sd.values().map(TorchTensor::numel).sum::<usize>(),
        4_694_073
    );
    assert_eq!(sd["_conv_stem.weight"].shape, vec![32, 3, 3, 3]);
    assert_eq!(sd["_fc.weight"].shape, vec![1000, 1280]);
    assert_eq!(sd["_fc.bias"].shape, vec![1000]);
    assert_eq!(
        sd["_blocks.0._depthwise_conv.weight"].shape,
        vec![32, 1, 3, 3]
    );
    assert_eq!(sd["_conv_head.weight"].shape, vec![1280, 320, 1, 1]);
    assert_eq!(sd["_bn0.num_batches_tracked"].shape, Vec::<usize>::new());
    assert_eq!(sd["_bn0.num_batches_tracked"].as_i64(), Some(&[0i64][..]));
    let fc = sd["_fc.weight"].as_f32().unwrap();
    assert_eq!(
        fc[..4],
        [
            -0.045_610_435_f32,
            -0.094_708_71,
            -0.056_841_466,
            0.068_238_81
        ]
    );
    let sum = |name: &str| -> f64 {
        sd[name]
            .as_f32()
            .unwrap()
            .iter()
            .map(|&v| f64::from(v))
            .sum()
    };
    assert!((sum("_fc.weight") - -470.632_567_301_287).abs() < 1e-6);
    assert!((sum("_conv_stem.weight") - -26.811_376_610_887_237).abs() < 1e-9);
}
