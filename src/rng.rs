//! A counter-based random generator for weight initialization.
//!
//! Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", the
//! generator behind TensorFlow's and Random123's streams), keyed by a 64-bit seed. A
//! stream is identified by the seed (the Philox key) and a 64-bit hash of a name (the
//! high half of the 128-bit counter); the low half counts blocks. Philox is a bijection
//! of the counter for a fixed key, so two names (or two seeds) never share a stream.
//!
//! Every number is made with IEEE-754 `+ - * /` and `sqrt` only (the normal sampler's
//! logarithm is computed here, not by the platform's libm), so a seed gives
//! bit-identical weights on every run and every machine.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox-4x32-10 block: 128 random bits for `counter` under `key`.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c[0]);
        let p1 = u64::from(M1) * u64::from(c[2]);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// SplitMix64's finalizer: a bijective 64-bit mixer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 64-bit hash of `bytes` under a domain tag (not cryptographic; used to name streams).
pub fn hash64(domain: u64, bytes: &[u8]) -> u64 {
    let mut h = mix64(domain ^ (bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    mix64(h)
}

/// [`hash64`] over bytes given piece by piece (the total length known first), so that
/// a large array is hashed without being copied into one buffer: the same bytes give
/// the same hash as [`hash64`].
#[derive(Clone, Debug)]
pub struct Hash64Stream {
    h: u64,
    word: [u8; 8],
    filled: usize,
}

impl Hash64Stream {
    pub fn new(domain: u64, total_len: u64) -> Hash64Stream {
        Hash64Stream {
            h: mix64(domain ^ total_len.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            word: [0; 8],
            filled: 0,
        }
    }
    pub fn update(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let take = (8 - self.filled).min(bytes.len());
            self.word[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == 8 {
                self.mix_word();
            }
        }
    }
    fn mix_word(&mut self) {
        self.h = mix64(self.h ^ u64::from_le_bytes(self.word)).wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.word = [0; 8];
        self.filled = 0;
    }
    pub fn finish(mut self) -> u64 {
        if self.filled > 0 {
            self.mix_word();
        }
        mix64(self.h)
    }
}

/// A sequential stream of random numbers: Philox blocks at successive counters.
#[derive(Clone, Debug)]
pub struct Rng {
    key: [u32; 2],
    stream: u64,
    block: u64,
    buf: [u32; 4],
    used: usize,
    spare_normal: Option<f64>,
}

/// Domain tags: a weight drawn from the global seed and one drawn from an initializer's
/// own `seed` argument live in different streams even when the two seeds are equal.
const DOMAIN_GLOBAL: u64 = 0x6B69_6C6E_2F67_6C6F; // "kiln/glo"
const DOMAIN_INIT: u64 = 0x6B69_6C6E_2F69_6E69; // "kiln/ini"

impl Rng {
    /// The stream `(seed, name)`.
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng {
            key: [seed as u32, (seed >> 32) as u32],
            stream,
            block: 0,
            buf: [0; 4],
            used: 4,
            spare_normal: None,
        }
    }

    /// The stream for the weight `key` (`dense_1/kernel`): drawn from the initializer's
    /// own `seed` when the spec gives one (so, as in Keras, such a weight does not change
    /// with the global seed), else from the global seed.
    pub fn for_weight(global_seed: u64, key: &str, init_seed: Option<u64>) -> Rng {
        match init_seed {
            Some(s) => Rng::new(s, hash64(DOMAIN_INIT, key.as_bytes())),
            None => Rng::new(global_seed, hash64(DOMAIN_GLOBAL, key.as_bytes())),
        }
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.used == 4 {
            let ctr = [
                self.block as u32,
                (self.block >> 32) as u32,
                self.stream as u32,
                (self.stream >> 32) as u32,
            ];
            self.buf = philox4x32(ctr, self.key);
            self.block = self.block.wrapping_add(1);
            self.used = 0;
        }
        let v = self.buf[self.used];
        self.used += 1;
        v
    }

    pub fn next_u64(&mut self) -> u64 {
        let lo = u64::from(self.next_u32());
        let hi = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal (Marsaglia's polar method: only `ln` and `sqrt`).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s >= 1.0 || s == 0.0 {
                continue;
            }
            let f = (-2.0 * ln(s) / s).sqrt();
            self.spare_normal = Some(v * f);
            return u * f;
        }
    }
}

/// Attempts of the polar method per part of [`Rng::fill_normal`]: the unit of work
/// handed to a thread. Fixed, so the parts never depend on the thread count.
const PART: u64 = 1 << 14;

/// Parts generated per round of [`Rng::fill_normal`] (bounds its scratch memory).
const ROUND: u64 = 64;

/// The two normals of the polar method's attempt at Philox block `block`, or `None`
/// where it rejects: the arithmetic of [`Rng::normal`] on the block's four words.
fn polar_attempt(key: [u32; 2], stream: u64, block: u64) -> Option<(f64, f64)> {
    let w = philox4x32(
        [
            block as u32,
            (block >> 32) as u32,
            stream as u32,
            (stream >> 32) as u32,
        ],
        key,
    );
    let unit = |lo: u32, hi: u32| {
        let bits = (u64::from(hi) << 32) | u64::from(lo);
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let u = 2.0 * unit(w[0], w[1]) - 1.0;
    let v = 2.0 * unit(w[2], w[3]) - 1.0;
    let s = u * u + v * v;
    if s >= 1.0 || s == 0.0 {
        return None;
    }
    let f = (-2.0 * ln(s) / s).sqrt();
    Some((u * f, v * f))
}

/// Attempts of the polar method computed side by side in [`polar_part`]: plain loops
/// over arrays of this many, which the compiler turns into vector instructions.
const LANES: usize = 16;

/// Appends to `buf` the normals of the polar method's attempts at Philox blocks
/// `start .. start + count` (`count` a multiple of [`LANES`]), in order: exactly what
/// [`polar_attempt`] gives one block at a time, with the same arithmetic, so the same
/// bits.
fn polar_part(key: [u32; 2], stream: u64, start: u64, count: u64, buf: &mut Vec<f64>) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { polar_part_avx2(key, stream, start, count, buf) };
        return;
    }
    polar_part_lanes(key, stream, start, count, buf);
}

/// [`polar_part_lanes`] compiled for AVX2: the same IEEE operations (no fused
/// multiply-adds: Rust never contracts), so the same bits, on wider vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn polar_part_avx2(key: [u32; 2], stream: u64, start: u64, count: u64, buf: &mut Vec<f64>) {
    polar_part_lanes(key, stream, start, count, buf);
}

/// The body of [`polar_part`], inlined into each of its compilations. (Lanes are
/// indexed across several arrays, structure-of-arrays, hence the index loops.)
#[inline(always)]
#[allow(clippy::needless_range_loop)]
fn polar_part_lanes(key: [u32; 2], stream: u64, start: u64, count: u64, buf: &mut Vec<f64>) {
    debug_assert_eq!(count % LANES as u64, 0);
    let unit = |lo: u32, hi: u32| {
        let bits = (u64::from(hi) << 32) | u64::from(lo);
        (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    };
    let mut first = start;
    for _ in 0..count / LANES as u64 {
        // Philox-4x32-10 on LANES counters (the rounds of `philox4x32`).
        let mut c = [[0u32; LANES]; 4];
        for l in 0..LANES {
            let block = first.wrapping_add(l as u64);
            c[0][l] = block as u32;
            c[1][l] = (block >> 32) as u32;
            c[2][l] = stream as u32;
            c[3][l] = (stream >> 32) as u32;
        }
        let mut k = key;
        for round in 0..10 {
            if round > 0 {
                k[0] = k[0].wrapping_add(W0);
                k[1] = k[1].wrapping_add(W1);
            }
            for l in 0..LANES {
                let p0 = u64::from(M0) * u64::from(c[0][l]);
                let p1 = u64::from(M1) * u64::from(c[2][l]);
                c[0][l] = ((p1 >> 32) as u32) ^ c[1][l] ^ k[0];
                c[1][l] = p1 as u32;
                c[2][l] = ((p0 >> 32) as u32) ^ c[3][l] ^ k[1];
                c[3][l] = p0 as u32;
            }
        }
        // The polar method on each lane; a rejected lane computes on a harmless s.
        let (mut a, mut b, mut keep) = ([0.0f64; LANES], [0.0f64; LANES], [false; LANES]);
        for l in 0..LANES {
            let u = 2.0 * unit(c[0][l], c[1][l]) - 1.0;
            let v = 2.0 * unit(c[2][l], c[3][l]) - 1.0;
            let s = u * u + v * v;
            keep[l] = s < 1.0 && s != 0.0;
            // s is a sum of squares of multiples of 2^-52: never subnormal.
            let s = if keep[l] { s } else { 0.5 };
            let f = (-2.0 * ln_normal(s.to_bits(), 0) / s).sqrt();
            a[l] = u * f;
            b[l] = v * f;
        }
        for l in 0..LANES {
            if keep[l] {
                buf.push(a[l]);
                buf.push(b[l]);
            }
        }
        first = first.wrapping_add(LANES as u64);
    }
}

impl Rng {
    /// Fills `out` with exactly the numbers `out.len()` calls of [`Rng::normal`] give,
    /// leaving the stream where they would, on up to `threads` threads.
    ///
    /// Each attempt of the polar method takes one whole Philox block, so from a block
    /// boundary attempt `k` is block `block + k` whatever came before it: parts of
    /// `PART` attempts are generated independently (a round of them at a time, on
    /// the threads), then laid end to end in order.
    pub fn fill_normal(&mut self, out: &mut [f64], threads: usize) {
        self.fill_normal_as(out, threads, |z| z);
    }

    /// [`Rng::fill_normal`] with each number converted by `conv` as it is stored (the
    /// orthogonal initializer keeps float32 normals without a float64 copy).
    pub fn fill_normal_as<T>(&mut self, out: &mut [T], threads: usize, conv: fn(f64) -> T) {
        if self.used != 4 || self.spare_normal.is_some() || (out.len() as u64) < PART {
            // Not at a block boundary, or fewer numbers than a part: one at a time.
            out.iter_mut().for_each(|x| *x = conv(self.normal()));
            return;
        }
        let (key, stream) = (self.key, self.stream);
        let mut parts: Vec<Vec<f64>> = vec![Vec::new(); ROUND as usize];
        let mut filled = 0;
        while filled < out.len() {
            let first = self.block;
            let work = |(i, buf): (usize, &mut Vec<f64>)| {
                buf.clear();
                polar_part(key, stream, first.wrapping_add(i as u64 * PART), PART, buf);
            };
            // About 1.57 normals per attempt (π/2): hardly more parts than the rest needs.
            let want = ((out.len() - filled) as u64).div_ceil(PART + PART / 2) as usize;
            let n = want.clamp(1, ROUND as usize);
            run_parts(
                parts.iter_mut().take(n).enumerate().collect(),
                threads,
                work,
            );
            for (i, buf) in parts.iter().take(n).enumerate() {
                let room = out.len() - filled;
                if buf.len() < room {
                    let dst = &mut out[filled..filled + buf.len()];
                    dst.iter_mut().zip(buf).for_each(|(x, &z)| *x = conv(z));
                    filled += buf.len();
                    self.block = first.wrapping_add((i as u64 + 1) * PART);
                    continue;
                }
                // The part holding the last normal asked for: the stream stops at the
                // attempt that made it.
                let dst = &mut out[filled..];
                dst.iter_mut()
                    .zip(&buf[..room])
                    .for_each(|(x, &z)| *x = conv(z));
                filled = out.len();
                let start = first.wrapping_add(i as u64 * PART);
                let mut taken = 0;
                for k in 0..PART {
                    if let Some((_, b)) = polar_attempt(key, stream, start.wrapping_add(k)) {
                        taken += 2;
                        if taken >= room {
                            self.block = start.wrapping_add(k + 1);
                            self.spare_normal = (taken > room).then_some(b);
                            break;
                        }
                    }
                }
                break;
            }
        }
    }
}

/// Runs `work` on each part, on up to `threads` threads, the parts taken in order (the
/// results never depend on `threads`: each part is one fixed piece of work). Used by
/// the parallel normal draw here and by the orthogonal initializer's QR.
pub fn run_parts<T: Send>(parts: Vec<T>, threads: usize, work: impl Fn(T) + Sync) {
    let threads = threads.clamp(1, parts.len().max(1));
    let queue = std::sync::Mutex::new(parts.into_iter());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    let worker = || {
        while let Some(part) = next() {
            work(part);
        }
    };
    if threads == 1 {
        worker();
        return;
    }
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(worker);
        }
        worker();
    });
}

/// Natural logarithm of a positive, finite `x`, from IEEE basic operations only (so its
/// result does not depend on the platform's libm). Accurate to about 1 ulp.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    if (x.to_bits() >> 52) & 0x7FF == 0 {
        // Subnormal: scale into the normal range first.
        return ln_normal((x * (1u64 << 54) as f64).to_bits(), -54);
    }
    ln_normal(x.to_bits(), 0)
}

/// `1 / (2k + 1)` for k = 1 to 12: the coefficients of `ln`'s atanh series (computed
/// once, with the same division the series would do).
const ATANH_SERIES: [f64; 12] = {
    let mut t = [0.0; 12];
    let mut k = 1;
    while k <= 12 {
        t[k - 1] = 1.0 / (2 * k + 1) as f64;
        k += 1;
    }
    t
};

/// `ln(x · 2^e0)` for the positive, finite, normal float64 `x` with bits `bits`: the
/// core of [`ln`], branch-free but for one select, so a loop over many of them (the
/// normal draw's lanes) vectorizes.
#[inline(always)]
fn ln_normal(bits: u64, e0: i64) -> f64 {
    // x = m · 2^e with m in [sqrt(1/2), sqrt(2)).
    let mut e = e0 + ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.1716.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = 0.0;
    for k in (0..12).rev() {
        series = series * s2 + ATANH_SERIES[k];
    }
    let ln_m = 2.0 * s + 2.0 * s * s2 * series;
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // |e| < 1100: exact through i32 (whose conversion vectorizes, i64's does not).
    let ef = f64::from(e as i32);
    ef * LN2_HI + (ln_m + ef * LN2_LO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_hash_equals_hash64_for_any_split() {
        let bytes: Vec<u8> = (0..53u8).map(|b| b.wrapping_mul(37)).collect();
        for cut in [0, 1, 7, 8, 9, 30, 53] {
            for len in [0, 5, 8, 53] {
                let b = &bytes[..len];
                let cut = cut.min(len);
                let mut s = Hash64Stream::new(42, len as u64);
                s.update(&b[..cut]);
                s.update(&b[cut..]);
                assert_eq!(s.finish(), hash64(42, b), "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn philox_matches_random123_known_answers() {
        assert_eq!(
            philox4x32([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn ln_agrees_with_libm() {
        let mut r = Rng::new(7, 0);
        let mut xs = vec![1.0, 2.0, 0.5, 1e-300, 5e-324, 1e300, f64::MAX, 0.999_999_9];
        for _ in 0..10_000 {
            xs.push(r.uniform() + 1e-12);
            xs.push((r.uniform() * 80.0 - 40.0).exp());
        }
        for x in xs {
            let (a, b) = (ln(x), x.ln());
            assert!(
                (a - b).abs() <= 2.0 * f64::EPSILON * b.abs().max(1e-300),
                "ln({x}) = {a}, libm says {b}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
        assert!(ln(-1.0).is_nan());
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
    }

    #[test]
    fn streams_are_deterministic_and_distinct() {
        let a: Vec<u64> = {
            let mut r = Rng::for_weight(0, "dense/kernel", None);
            (0..8).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::for_weight(0, "dense/kernel", None);
        let again: Vec<u64> = (0..8).map(|_| r.next_u64()).collect();
        assert_eq!(a, again);
        for other in [
            Rng::for_weight(1, "dense/kernel", None),
            Rng::for_weight(0, "dense/bias", None),
            Rng::for_weight(0, "dense/kernel", Some(0)),
        ] {
            let mut o = other;
            let b: Vec<u64> = (0..8).map(|_| o.next_u64()).collect();
            assert_ne!(a, b);
        }
        // An initializer's own seed does not depend on the global seed.
        let mut x = Rng::for_weight(0, "k", Some(5));
        let mut y = Rng::for_weight(99, "k", Some(5));
        assert_eq!(x.next_u64(), y.next_u64());
    }

    #[test]
    fn fill_normal_is_normal_called_again_and_again() {
        // Lengths across the parts (16,384 attempts, about 25,700 normals) and rounds,
        // odd ones leaving a spare; on 1, 2 and 3 threads; and the stream afterwards.
        for len in [0, 1, 2, 3, 1001, 16_384, 25_735, 60_001, 2_100_001] {
            let mut seq = Rng::new(3, 4);
            let want: Vec<f64> = (0..len).map(|_| seq.normal()).collect();
            for threads in [1, 2, 3] {
                let mut par = Rng::new(3, 4);
                let mut got = vec![0.0; len];
                par.fill_normal(&mut got, threads);
                assert!(
                    want.iter()
                        .zip(&got)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{len} on {threads} threads"
                );
                let mut after = seq.clone();
                for _ in 0..5 {
                    assert_eq!(after.normal().to_bits(), par.normal().to_bits(), "{len}");
                }
                assert_eq!(after.next_u32(), par.next_u32());
            }
        }
        // Not at a block boundary (half a block used, or a spare held): the same.
        for skip in [1, 3] {
            let mut seq = Rng::new(8, 1);
            let mut par = seq.clone();
            for _ in 0..skip {
                seq.next_u32();
                par.next_u32();
            }
            seq.normal();
            par.normal();
            let want: Vec<f64> = (0..999).map(|_| seq.normal()).collect();
            let mut got = vec![0.0; 999];
            par.fill_normal(&mut got, 2);
            assert_eq!(want, got);
            assert_eq!(seq.next_u64(), par.next_u64());
        }
    }

    #[test]
    fn fill_normal_as_converts_the_same_numbers() {
        // The lane-wise draw (vectorized) and the converted copy: the sequential
        // stream's numbers, rounded once.
        for len in [5, 40_000] {
            let mut wide = Rng::new(9, 2);
            let mut want = vec![0.0; len];
            wide.fill_normal(&mut want, 2);
            let mut narrow = Rng::new(9, 2);
            let mut got = vec![0.0f32; len];
            narrow.fill_normal_as(&mut got, 2, |z| z as f32);
            assert!(
                want.iter()
                    .zip(&got)
                    .all(|(&a, &b)| (a as f32).to_bits() == b.to_bits())
            );
            assert_eq!(wide.next_u64(), narrow.next_u64());
        }
    }

    #[test]
    fn uniform_is_in_unit_interval_and_normal_is_standard() {
        let mut r = Rng::new(1, 2);
        let n = 200_000;
        let (mut sum, mut sq) = (0.0, 0.0);
        for _ in 0..n {
            let u = r.uniform();
            assert!((0.0..1.0).contains(&u));
            let z = r.normal();
            sum += z;
            sq += z * z;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the
        // variance; allow five of them.
        assert!(mean.abs() < 0.012, "mean {mean}");
        assert!((var - 1.0).abs() < 0.016, "var {var}");
    }
}
