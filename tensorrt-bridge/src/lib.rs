//! dishcam's bridge over TensorRT: `include/dishcam_trt.h` is the C ABI, `src/bridge.cpp` its
//! implementation over TensorRT 8.5-11. Nothing here is linked into dishcam: with the `compile`
//! feature, the build script compiles the C++ into a shared library that the runtime opens at
//! run time (`dishcam_runtime::backend::tensorrt`).

/// The ABI version in `include/dishcam_trt.h` (`DISHCAM_TRT_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;

/// The shared library this build compiled, when built with the `compile` feature.
pub const BUILT_LIBRARY: Option<&str> = option_env!("DISHCAM_TRT_BRIDGE_BUILT");

/// The ABI header's text, for tools and tests that compile against it.
pub const HEADER: &str = include_str!("../include/dishcam_trt.h");

#[cfg(test)]
mod tests {
    #[test]
    fn the_abi_version_constant_matches_the_header() {
        let line = super::HEADER
            .lines()
            .find(|l| l.starts_with("#define DISHCAM_TRT_ABI_VERSION"))
            .expect("the header defines its ABI version");
        assert_eq!(
            line.split_whitespace().nth(2),
            Some(format!("{}u", super::ABI_VERSION).as_str())
        );
    }
}
