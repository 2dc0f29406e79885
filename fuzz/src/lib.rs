//! dishcam fuzz targets: see `fuzz_targets/` and `scripts/fuzz.sh`.

pub mod harness;
