//! The ABI test bridge (`tests/tensorrt/mock_bridge.c`), compiled on demand with the system C
//! compiler into the test target's temp dir, one library per variant.

use std::path::PathBuf;
use std::process::Command;

/// Compiles the mock bridge with `defines` (e.g. `MOCK_ABI_VERSION=999`) into
/// `$CARGO_TARGET_TMPDIR/tensorrt-mock/<variant>/libdishcam_trt_bridge.so`. `None` (after a loud
/// SKIPPED line) only when there is no C compiler; a compile error fails the test.
pub fn mock_bridge(variant: &str, defines: &[&str]) -> Option<PathBuf> {
    let repo = super::repo();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("tensorrt-mock")
        .join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    let lib = dir.join("libdishcam_trt_bridge.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    // Compiled under a unique name and renamed: tests in other processes may be loading it.
    let tmp = dir.join(format!(
        ".build-{}-{:?}.so",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-std=c11", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
    ])
    .arg("-I")
    .arg(repo.join("tensorrt-bridge/include"));
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    cmd.arg(repo.join("tests/tensorrt/mock_bridge.c"))
        .arg("-o")
        .arg(&tmp)
        .arg("-lpthread");
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED (tensorrt ABI test bridge): no C compiler `{cc}` ({e}); install gcc or set CC");
            return None;
        }
    };
    assert!(
        out.status.success(),
        "compiling the ABI test bridge failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &lib).unwrap();
    Some(lib)
}
