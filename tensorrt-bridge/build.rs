//! With the `compile` feature: compiles `src/bridge.cpp` into `libdishcam_trt_bridge.so` with the
//! system C++ compiler and `-shared` (the `cc` crate alone only makes static archives), and
//! copies it next to the binaries (`target/<profile>/`), where the runtime looks for it.
//!
//! Headers and libraries are looked for in, in order:
//! - `TENSORRT_INCLUDE_DIR` / `TENSORRT_LIB_DIR`, `CUDA_HOME` (or `CUDA_PATH`);
//! - JetPack's defaults: `/usr/include/aarch64-linux-gnu` and `/usr/lib/aarch64-linux-gnu`
//!   (TensorRT), `/usr/local/cuda` (CUDA);
//! - x86 package defaults: `/usr/include/x86_64-linux-gnu`, `/usr/lib/x86_64-linux-gnu`.
//!
//! `CXX` picks the compiler (default `c++`).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/bridge.cpp");
    println!("cargo:rerun-if-changed=include/dishcam_trt.h");
    for var in [
        "TENSORRT_INCLUDE_DIR",
        "TENSORRT_LIB_DIR",
        "CUDA_HOME",
        "CUDA_PATH",
        "CXX",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if env::var_os("CARGO_FEATURE_COMPILE").is_none() {
        return;
    }
    if let Err(msg) = compile() {
        // A clear, single error instead of a wall of compiler output about missing headers.
        eprintln!("error: {msg}");
        println!("cargo:warning={msg}");
        std::process::exit(1);
    }
}

fn first_with(candidates: &[PathBuf], file: &str) -> Option<PathBuf> {
    candidates.iter().find(|d| d.join(file).is_file()).cloned()
}

fn env_path(var: &str) -> Option<PathBuf> {
    env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn compile() -> Result<(), String> {
    let mut trt_include: Vec<PathBuf> = env_path("TENSORRT_INCLUDE_DIR").into_iter().collect();
    trt_include.extend(
        [
            "/usr/include/aarch64-linux-gnu",
            "/usr/include/x86_64-linux-gnu",
            "/usr/include",
        ]
        .map(PathBuf::from),
    );
    let mut trt_lib: Vec<PathBuf> = env_path("TENSORRT_LIB_DIR").into_iter().collect();
    trt_lib.extend(["/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu"].map(PathBuf::from));
    let cuda_home = env_path("CUDA_HOME")
        .or_else(|| env_path("CUDA_PATH"))
        .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));

    let trt_inc = first_with(&trt_include, "NvInfer.h").ok_or_else(|| {
        format!(
            "the `tensorrt` feature needs TensorRT's headers, and NvInfer.h is in none of {}; install TensorRT (JetPack ships it) or set TENSORRT_INCLUDE_DIR",
            show(&trt_include)
        )
    })?;
    if !trt_inc.join("NvOnnxParser.h").is_file() {
        return Err(format!(
            "{} has NvInfer.h but not NvOnnxParser.h; install TensorRT's ONNX parser (libnvonnxparsers-dev)",
            trt_inc.display()
        ));
    }
    let lib_name = |d: &Path| d.join("libnvinfer.so").exists();
    let trt_lib = trt_lib.into_iter().find(|d| lib_name(d)).ok_or_else(|| {
        "libnvinfer.so not found; set TENSORRT_LIB_DIR to TensorRT's lib directory".to_string()
    })?;
    let cuda_inc = cuda_home.join("include");
    if !cuda_inc.join("cuda_runtime_api.h").is_file() {
        return Err(format!(
            "cuda_runtime_api.h not found in {}; set CUDA_HOME (JetPack: /usr/local/cuda)",
            cuda_inc.display()
        ));
    }
    let cuda_lib = ["lib64", "lib", "targets/aarch64-linux/lib"]
        .iter()
        .map(|d| cuda_home.join(d))
        .find(|d| d.join("libcudart.so").exists())
        .ok_or_else(|| format!("libcudart.so not found under {}", cuda_home.display()))?;

    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let lib = out_dir.join("libdishcam_trt_bridge.so");
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&cxx)
        .args(["-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-Wextra"])
        .arg("-I")
        .arg(manifest.join("include"))
        .arg("-I")
        .arg(&trt_inc)
        .arg("-I")
        .arg(&cuda_inc)
        .arg(manifest.join("src/bridge.cpp"))
        .arg("-o")
        .arg(&lib)
        .arg(format!("-L{}", trt_lib.display()))
        .arg(format!("-L{}", cuda_lib.display()))
        .arg(format!("-Wl,-rpath,{}", trt_lib.display()))
        .arg(format!("-Wl,-rpath,{}", cuda_lib.display()))
        .args(["-lnvinfer", "-lnvonnxparser", "-lcudart"])
        .status()
        .map_err(|e| format!("cannot run the C++ compiler `{cxx}` ({e}); set CXX"))?;
    if !status.success() {
        return Err(format!(
            "compiling src/bridge.cpp against {} failed (see the compiler output above)",
            trt_inc.display()
        ));
    }
    println!("cargo:rustc-env=DISHCAM_TRT_BRIDGE_BUILT={}", lib.display());
    // target/<profile>/build/<pkg>/out -> target/<profile>: next to the dishcam binary, the
    // first place the runtime looks after DISHCAM_TRT_BRIDGE.
    if let Some(profile_dir) = out_dir.ancestors().nth(3) {
        let _ = std::fs::copy(&lib, profile_dir.join("libdishcam_trt_bridge.so"));
    }
    Ok(())
}

fn show(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
