//! The aarch64 check of the int8 recipe scan (`scripts/check-neon.sh` builds this alone for
//! aarch64 and runs it under qemu): the NEON path must equal the portable loop exactly on every
//! case below, extreme codes and ragged tails included. Prints one line and exits 0, or names the
//! first mismatch and exits 1.

#[path = "../src/index/int8_scan.rs"]
#[allow(dead_code)]
mod int8_scan;

fn main() {
    let arch = if cfg!(target_arch = "aarch64") { "aarch64 NEON" } else { "this host" };
    // A small xorshift: the same codes on every run, no crates (this builds with rustc alone).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8 as i8
    };
    let mut cases = 0;
    for dim in [1usize, 7, 15, 16, 17, 31, 32, 33, 64, 100, 384, 389, 1024] {
        for fill in 0..4 {
            let rows = 9;
            let mut q: Vec<i8> = (0..dim).map(|_| next()).collect();
            let mut codes: Vec<i8> = (0..dim * rows).map(|_| next()).collect();
            // Extremes, including -128 (outside what quantise_i8 writes, still exact here).
            match fill {
                1 => q.iter_mut().for_each(|v| *v = -128),
                2 => codes.iter_mut().for_each(|v| *v = -128),
                3 => {
                    q.iter_mut().for_each(|v| *v = 127);
                    codes[..dim].iter_mut().for_each(|v| *v = 127);
                    codes[dim..2 * dim].iter_mut().for_each(|v| *v = -127);
                }
                _ => {}
            }
            let (mut fast, mut slow) = (vec![0i32; rows], vec![0i32; rows]);
            int8_scan::scan_i8(&q, &codes, &mut fast);
            int8_scan::scan_i8_portable(&q, &codes, &mut slow);
            if fast != slow {
                eprintln!("MISMATCH on {arch}: dim {dim}, fill {fill}: {fast:?} != {slow:?}");
                std::process::exit(1);
            }
            cases += 1;
        }
    }
    println!("ok: int8 scan on {arch} equals the portable loop in {cases} cases");
}
