//! Dot-product kernels. The f32 dot product is one portable body, compiled twice: for the baseline
//! target and, on x86-64, with AVX2+FMA enabled, picked at run time (the release binary is built
//! for baseline x86-64, where the compiler may only use SSE2); on aarch64 NEON is baseline, so the
//! portable body is already vectorised. The int8 scan has intrinsics per architecture, in
//! [`super::int8_scan`].

#[inline(always)]
fn dot_f32_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; L];
    let mut ca = a.chunks_exact(L);
    let mut cb = b.chunks_exact(L);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for j in 0..L {
            acc[j] = if FMA {
                x[j].mul_add(y[j], acc[j])
            } else {
                acc[j] + x[j] * y[j]
            };
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_body::<true>(a, b)
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Dot product of two f32 slices (over the shorter length).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // Safety: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { dot_f32_avx2(a, b) };
    }
    dot_f32_body::<false>(a, b)
}

pub use super::int8_scan::scan_i8;

/// Symmetric per-vector int8 quantisation: `scale = max|x| / 127`, `code = round(x / scale)`.
/// Returns the scale (0 for an all-zero vector).
pub fn quantise_i8(x: &[f32], out: &mut [i8]) -> f32 {
    let m = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if m == 0.0 || !m.is_finite() {
        out.iter_mut().for_each(|o| *o = 0);
        return 0.0;
    }
    let inv = 127.0 / m;
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
    }
    m / 127.0
}

/// Scales `x` to unit L2 norm in place (left as is when its norm is 0). Returns the original norm.
pub fn normalise(x: &mut [f32]) -> f32 {
    let n = dot_f32(x, x).sqrt();
    if n > 0.0 && n.is_finite() {
        x.iter_mut().for_each(|v| *v /= n);
    }
    n
}

/// `out[i*n + j] = a_i · b_j` for `a` (m x d) and `b` (n x d), row-major, through matrixmultiply's
/// sgemm (runtime-dispatched SIMD kernels).
pub fn gemm_abt(a: &[f32], b: &[f32], d: usize, out: &mut [f32]) {
    let m = a.len() / d;
    let n = b.len() / d;
    assert!(out.len() >= m * n && a.len() == m * d && b.len() == n * d);
    // Safety: the asserts above guarantee every index sgemm touches is inside the three slices.
    unsafe {
        matrixmultiply::sgemm(
            m,
            d,
            n,
            1.0,
            a.as_ptr(),
            d as isize,
            1,
            b.as_ptr(),
            1,
            d as isize,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive() {
        let a: Vec<f32> = (0..389)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..389)
            .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot_f32(&a, &b) as f64 - naive).abs() < 1e-3);
        let mut qa = vec![0i8; 389];
        let mut qb = vec![0i8; 389 * 2];
        let sa = quantise_i8(&a, &mut qa);
        let sb = quantise_i8(&b, &mut qb[..389]);
        quantise_i8(&a, &mut qb[389..]);
        let mut out = [0i32; 2];
        scan_i8(&qa, &qb, &mut out);
        let naive_i: i32 = qa
            .iter()
            .zip(&qb[..389])
            .map(|(x, y)| *x as i32 * *y as i32)
            .sum();
        assert_eq!(out[0], naive_i);
        assert!((out[0] as f32 * sa * sb - naive as f32).abs() < 0.05 * naive.abs() as f32 + 0.5);
        // The SIMD scan equals the portable one on many rows, extreme codes and a ragged tail.
        for dim in [1, 31, 32, 33, 384, 389] {
            let rows = 17;
            let code = |i: usize| (((i * 7919) % 255) as i32 - 127) as i8;
            let q: Vec<i8> = (0..dim).map(|i| code(i * 3 + 1)).collect();
            let mut codes: Vec<i8> = (0..dim * rows).map(code).collect();
            codes[..dim].iter_mut().for_each(|c| *c = 127);
            codes[dim..2 * dim].iter_mut().for_each(|c| *c = -127);
            let (mut fast, mut slow) = (vec![0i32; rows], vec![0i32; rows]);
            scan_i8(&q, &codes, &mut fast);
            super::super::int8_scan::scan_i8_portable(&q, &codes, &mut slow);
            assert_eq!(fast, slow, "dim {dim}");
        }
        let mut g = vec![0f32; 4];
        let m: Vec<f32> = a.iter().chain(&b).copied().collect();
        gemm_abt(&m, &m, 389, &mut g);
        assert!((g[1] as f64 - naive).abs() < 1e-2);
    }
}
