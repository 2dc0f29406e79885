#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dishcam_fuzz::harness::recipe1m(data);
});
