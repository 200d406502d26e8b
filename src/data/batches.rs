//! The order of examples in an epoch, and its batches.

use crate::dim::fmt_shape;
use crate::layers::TensorType;

/// A seeded permutation of `0..n` (Fisher–Yates on a Philox stream): the order of the
/// examples in one epoch. The same (seed, epoch) gives the same order on every machine.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let stream = crate::rng::hash64(0x6b69_6c6e_2f73_6875, &epoch.to_le_bytes());
    let mut rng = crate::weights::Rng::new(seed, stream);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        // Unbiased: rejection on the top of the range.
        let bound = (i + 1) as u64;
        let zone = u64::MAX - u64::MAX % bound;
        let j = loop {
            let r = rng.next_u64();
            if r < zone {
                break (r % bound) as usize;
            }
        };
        p.swap(i, j);
    }
    p
}

/// The number of batches of an epoch: ceil(n / batch_size).
pub fn num_batches(n: usize, batch_size: usize) -> usize {
    n.div_ceil(batch_size.max(1))
}

/// Indices of batch `b` in an epoch's order (the last batch may be partial).
pub fn batch_indices(order: &[usize], batch_size: usize, b: usize) -> &[usize] {
    let start = (b * batch_size).min(order.len());
    let end = ((b + 1) * batch_size).min(order.len());
    &order[start..end]
}

/// Shape text for messages: `[batch, 8, 8, 1]`.
pub fn describe(ty: &TensorType) -> String {
    fmt_shape(&ty.shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(100, 7, 0);
        let b = permutation(100, 7, 0);
        let c = permutation(100, 7, 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(num_batches(1437, 32), 45);
        assert_eq!(batch_indices(&a, 32, 3).len(), 4);
    }
}
