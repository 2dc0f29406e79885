//! Dot-product kernels. Each is one portable body, compiled twice: for the baseline target and, on
//! x86-64, with AVX2+FMA enabled, picked at run time (the release binary is built for baseline
//! x86-64, where the compiler may only use SSE2). On aarch64 NEON is baseline, so the portable body is
//! already vectorised.

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

#[inline(always)]
fn scan_i8_body(q: &[i8], codes: &[i8], out: &mut [i32]) {
    let dim = q.len();
    for (row, o) in codes.chunks_exact(dim).zip(out.iter_mut()) {
        *o = row
            .iter()
            .zip(q)
            .map(|(&a, &b)| (a as i16 * b as i16) as i32)
            .sum();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_body::<true>(a, b)
}

/// AVX2 int8 scan, written with intrinsics because the compiler does not find this form itself:
/// the portable body auto-vectorised to widening multiplies and ran 2.3x *slower* than the f32
/// dot product on the same rows (`cargo bench --bench hot -- dot`). Here `maddubs` multiplies
/// |q| (unsigned) by the row with q's sign applied, summing pairs into i16 (at most
/// 2 * 127 * 127 = 32258, so no saturation for codes in [-127, 127], which is what
/// [`quantise_i8`] produces), then `madd` with ones widens the pairs into i32 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_i8_avx2(q: &[i8], codes: &[i8], out: &mut [i32]) {
    use std::arch::x86_64::*;
    let dim = q.len();
    let full = dim / 32 * 32;
    let ones = _mm256_set1_epi16(1);
    for (row, o) in codes.chunks_exact(dim).zip(out.iter_mut()) {
        let mut acc = _mm256_setzero_si256();
        let mut i = 0;
        while i < full {
            // Safety: i + 32 <= full <= dim = q.len() = row.len(); unaligned loads.
            let a = _mm256_loadu_si256(q.as_ptr().add(i) as *const __m256i);
            let b = _mm256_loadu_si256(row.as_ptr().add(i) as *const __m256i);
            let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
            i += 32;
        }
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let s = _mm_hadd_epi32(s, s);
        let s = _mm_hadd_epi32(s, s);
        let mut total = _mm_cvtsi128_si32(s);
        for j in full..dim {
            total += q[j] as i32 * row[j] as i32;
        }
        *o = total;
    }
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

/// `out[r] = q · codes[r*dim..(r+1)*dim]` in i32 for every full row of `codes` (`dim = q.len()`).
pub fn scan_i8(q: &[i8], codes: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // Safety: the CPU supports AVX2 (checked just above).
        return unsafe { scan_i8_avx2(q, codes, out) };
    }
    scan_i8_body(q, codes, out)
}

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
            scan_i8_body(&q, &codes, &mut slow);
            assert_eq!(fast, slow, "dim {dim}");
        }
        let mut g = vec![0f32; 4];
        let m: Vec<f32> = a.iter().chain(&b).copied().collect();
        gemm_abt(&m, &m, 389, &mut g);
        assert!((g[1] as f64 - naive).abs() < 1e-2);
    }
}
