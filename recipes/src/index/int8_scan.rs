//! The int8 recipe scan: `out[r] = q · row r` in i32, with intrinsics per architecture (AVX2 on
//! x86-64, picked at run time; NEON on aarch64, where it is baseline) and the portable loop
//! everywhere else. The portable loop is the definition: each SIMD path must equal it exactly, for
//! any i8 input, and is tested against it (x86-64: `kernels::tests`; aarch64:
//! `scripts/check-neon.sh`, which cross-compiles this file alone and runs it under qemu).
//!
//! This file depends on nothing but `std` and stays within Rust 1.63 (Debian's cross `rustc`,
//! which the aarch64 check uses), so that it compiles on its own.

/// The definition: widening multiplies summed in i32.
pub fn scan_i8_portable(q: &[i8], codes: &[i8], out: &mut [i32]) {
    let dim = q.len();
    for (row, o) in codes.chunks_exact(dim).zip(out.iter_mut()) {
        *o = row
            .iter()
            .zip(q)
            .map(|(&a, &b)| (a as i16 * b as i16) as i32)
            .sum();
    }
}

/// `out[r] = q · codes[r*dim..(r+1)*dim]` in i32 for every full row of `codes` (`dim = q.len()`).
pub fn scan_i8(q: &[i8], codes: &[i8], out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // Safety: the CPU supports AVX2 (checked just above).
        return unsafe { scan_i8_avx2(q, codes, out) };
    }
    #[cfg(target_arch = "aarch64")]
    {
        // Safety: NEON is part of the aarch64 baseline (every aarch64 Linux CPU has it).
        #[allow(clippy::needless_return)]
        return unsafe { scan_i8_neon(q, codes, out) };
    }
    #[allow(unreachable_code)]
    scan_i8_portable(q, codes, out)
}

/// AVX2 int8 scan, written with intrinsics because the compiler does not find this form itself:
/// the portable body auto-vectorised to widening multiplies and ran 2.3x *slower* than the f32
/// dot product on the same rows (`cargo bench --bench hot -- dot`). Here `maddubs` multiplies
/// |q| (unsigned) by the row with q's sign applied, summing pairs into i16 (at most
/// 2 * 127 * 127 = 32258, so no saturation for codes in [-127, 127], which is what
/// `kernels::quantise_i8` produces), then `madd` with ones widens the pairs into i32 lanes.
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

/// NEON int8 scan: 16 codes a step, `vmull_s8` on each half into exact i16 products (at most
/// 128 * 128 = 16384, so any i8 input is exact, not only [-127, 127]), then `vpadalq_s16` adds
/// the products pairwise into four i32 lanes. The portable loop auto-vectorises on aarch64 to
/// widening moves and multiplies per lane and ran slower than the f32 scan (issue 25); this is
/// two multiplies and two pairwise accumulates per 16 codes, the f32 scan's instruction count
/// for a quarter of its memory traffic.
#[cfg(target_arch = "aarch64")]
unsafe fn scan_i8_neon(q: &[i8], codes: &[i8], out: &mut [i32]) {
    use std::arch::aarch64::*;
    let dim = q.len();
    let full = dim / 16 * 16;
    for (row, o) in codes.chunks_exact(dim).zip(out.iter_mut()) {
        let mut acc = vdupq_n_s32(0);
        let mut i = 0;
        while i < full {
            // Safety: i + 16 <= full <= dim = q.len() = row.len(); vld1q has no alignment need.
            let a = vld1q_s8(q.as_ptr().add(i));
            let b = vld1q_s8(row.as_ptr().add(i));
            acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(a), vget_low_s8(b)));
            acc = vpadalq_s16(acc, vmull_high_s8(a, b));
            i += 16;
        }
        let mut total = vaddvq_s32(acc);
        for j in full..dim {
            total += q[j] as i32 * row[j] as i32;
        }
        *o = total;
    }
}
