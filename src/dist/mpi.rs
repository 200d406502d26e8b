//! [`Comm`] over MPI (the `mpi` crate, rsmpi 0.8, on the system's Open MPI): the only
//! file that touches MPI. MPI's default error handler ends the job on a failed
//! collective, so the collectives return nothing.

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::{CommunicatorCollectives, Root};

use super::{BUCKET, Comm};
use crate::error::Error;

/// The MPI world; dropping it finalizes MPI.
pub(super) struct Mpi {
    world: SimpleCommunicator,
    // Kept for its `Drop` (MPI_Finalize), after every use of `world`.
    _universe: Universe,
}

impl Mpi {
    pub(super) fn init() -> Result<Mpi, Error> {
        let universe =
            mpi::initialize().ok_or_else(|| Error::internal("MPI was initialized already"))?;
        Ok(Mpi {
            world: universe.world(),
            _universe: universe,
        })
    }
}

/// Sums `buf` over the world a bucket at a time through one bucket of scratch memory.
fn allreduce<T: Copy + Default + mpi::datatype::Equivalence>(
    w: &SimpleCommunicator,
    buf: &mut [T],
) {
    let mut send = vec![T::default(); buf.len().min(BUCKET)];
    for chunk in buf.chunks_mut(BUCKET) {
        let s = &mut send[..chunk.len()];
        s.copy_from_slice(chunk);
        w.all_reduce_into(&s[..], chunk, SystemOperation::sum());
    }
}

impl Comm for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn allreduce_f32(&self, buf: &mut [f32]) {
        allreduce(&self.world, buf);
    }
    fn allreduce_f64(&self, buf: &mut [f64]) {
        allreduce(&self.world, buf);
    }
    fn broadcast(&self, buf: &mut [u8], root: usize) {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
    }
    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
