//! Data-parallel training's communication (issue 12): the few collective operations
//! the fit loop needs, behind one trait, [`Comm`]. A single process is [`Single`] (every
//! collective is the identity); built with the cargo feature `mpi` and started by
//! `mpirun`, [`world`] joins the MPI world (Open MPI through the `mpi` crate, in
//! `mpi.rs`, the only file that touches MPI).
//!
//! Sums of large buffers go in buckets of at most [`BUCKET`] values, so a large model
//! needs one bucket of scratch memory, not a second copy of its gradients.

#[cfg(feature = "mpi")]
mod mpi;

use crate::error::Error;

/// The most values one reduction sends at once (256 KiB of f32). Measured here
/// (SCALING.md): Open MPI's allreduce of two processes on one machine takes 0.3 ms for
/// 256 KiB but 18–34 ms for 1 MiB (it changes algorithm above that size), so a large
/// buffer goes in buckets of this size.
pub const BUCKET: usize = 1 << 16;

/// The processes of a data-parallel run: who this one is, how many there are, and the
/// collectives over all of them. Every process calls each collective in the same order
/// with buffers of the same length.
pub trait Comm {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Sums `buf` element-wise over all processes, in place (every process gets the
    /// same bits); in buckets of at most [`BUCKET`] values.
    fn allreduce_f32(&self, buf: &mut [f32]);
    /// [`Comm::allreduce_f32`] for f64 values.
    fn allreduce_f64(&self, buf: &mut [f64]);
    /// Rank `root`'s `buf` copied to every process (same length everywhere).
    fn broadcast(&self, buf: &mut [u8], root: usize);
    /// Ends every process of the run with exit code `code` (MPI_Abort); a single
    /// process exits.
    fn abort(&self, code: i32) -> !;
}

/// One process alone: rank 0 of 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allreduce_f32(&self, _buf: &mut [f32]) {}
    fn allreduce_f64(&self, _buf: &mut [f64]) {}
    fn broadcast(&self, _buf: &mut [u8], _root: usize) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Whether this process was started by a launcher as one of several ranks (Open MPI's
/// `OMPI_COMM_WORLD_SIZE`, or PMI's `PMI_SIZE` for MPICH's `mpiexec`).
pub fn launched_ranks() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// The run's processes: the MPI world when this build has the `mpi` feature and a
/// launcher started it, else [`Single`]. An error when a launcher started several
/// ranks of a build without MPI (each would train alone and write the same files).
pub fn world() -> Result<Box<dyn Comm>, Error> {
    match launched_ranks() {
        Some(k) if k > 1 => join(k),
        _ => Ok(Box::new(Single)),
    }
}

#[cfg(feature = "mpi")]
fn join(_k: usize) -> Result<Box<dyn Comm>, Error> {
    Ok(Box::new(mpi::Mpi::init()?))
}

#[cfg(not(feature = "mpi"))]
fn join(k: usize) -> Result<Box<dyn Comm>, Error> {
    Err(Error::Invalid(format!(
        "this process is one of {k} ranks started by mpirun, but this kiln was built without MPI; build it with `cargo build --release --features mpi`"
    )))
}

/// This rank's part of `n` items: `rank * n / size .. (rank + 1) * n / size` (the
/// parts differ by at most one item and cover `0..n` in rank order).
pub fn share(n: usize, rank: usize, size: usize) -> std::ops::Range<usize> {
    let size = size.max(1);
    rank * n / size..(rank + 1) * n / size
}

/// The seed of rank `rank`'s random streams (dropout) in a run seeded `seed`: the
/// seed itself on rank 0, so that one process draws what it always drew; a hash of
/// `(seed, rank)` elsewhere.
pub fn rank_seed(seed: u64, rank: usize) -> u64 {
    if rank == 0 {
        return seed;
    }
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..].copy_from_slice(&(rank as u64).to_le_bytes());
    crate::rng::hash64(0x6b69_6c6e_7261_6e6b, &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_in_order() {
        for n in 0..20 {
            for k in 1..6 {
                let mut next = 0;
                for r in 0..k {
                    let s = share(n, r, k);
                    assert_eq!(s.start, next);
                    assert!(s.len() <= n.div_ceil(k));
                    next = s.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn rank_zero_keeps_the_seed() {
        assert_eq!(rank_seed(7, 0), 7);
        assert_ne!(rank_seed(7, 1), rank_seed(7, 2));
        assert_ne!(rank_seed(7, 1), 7);
    }
}
