//! The fit loop over several processes (data-parallel training, issue 12), on a
//! [`Comm`]. With one process nothing here runs: the loop calls the model's whole
//! training step, one compiled function. With K processes every one walks the same
//! global batches (the same seeded order) and takes its share of each
//! ([`dist::share`]); the step is the model's [`SplitStep`]: each process computes its
//! share's gradients weighted by its examples, one sum over the processes (a single
//! contiguous buffer, bucketed by the [`Comm`]), then every process applies the same
//! sum. A second small sum carries the running sums of the loss and metrics, the
//! parameters the forward pass updates (batch-norm's moving statistics, averaged
//! weighted by examples) and the stop flag, so every process holds the same weights,
//! logs and decisions. Dropout draws from a stream per process
//! ([`dist::rank_seed`]).

use super::run::Sums;
use crate::data::Dataset;
use crate::dist::{self, Comm};
use crate::error::Error;
use crate::net::{Logs, Net, SplitStep, rng_key};

/// The processes of a run, and the split step when there are several.
pub(super) struct Ranks<'a> {
    comm: &'a dyn Comm,
    split: Option<SplitStep>,
}

/// One global batch's result on every process.
pub(super) struct Reduced {
    /// The batch's mean loss.
    pub loss: f32,
    /// Whether any process was asked to stop.
    pub stop: bool,
}

impl<'a> Ranks<'a> {
    /// The run's processes; with several, the global batch `batch_size` must divide
    /// among them, and the model's split step is compiled.
    pub(super) fn new(
        net: &Net,
        comm: &'a dyn Comm,
        batch_size: usize,
    ) -> Result<Ranks<'a>, Error> {
        let k = comm.size();
        if k <= 1 {
            return Ok(Ranks { comm, split: None });
        }
        if !batch_size.is_multiple_of(k) {
            return Err(Error::Invalid(format!(
                "the batch size {batch_size} is the global batch of {k} processes, which take equal shares of it; {k} does not divide {batch_size}: use a multiple of {k} (`--batch-size` or the spec's `batch_size`)"
            )));
        }
        Ok(Ranks {
            comm,
            split: Some(SplitStep::new(net)?),
        })
    }

    /// Whether several processes train.
    pub(super) fn distributed(&self) -> bool {
        self.split.is_some()
    }

    /// Whether this process reports and writes files (rank 0).
    pub(super) fn speaks(&self) -> bool {
        self.comm.rank() == 0
    }

    /// Refuses to start when the processes see different training data (their
    /// examples and fingerprint against rank 0's).
    pub(super) fn check_same_data(&self, id: (usize, u64)) -> Result<(), Error> {
        if !self.distributed() {
            return Ok(());
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&(id.0 as u64).to_le_bytes());
        b[8..].copy_from_slice(&id.1.to_le_bytes());
        self.comm.broadcast(&mut b, 0);
        let mut ok = [f64::from(u8::from(
            b[..8] == (id.0 as u64).to_le_bytes() && b[8..] == id.1.to_le_bytes(),
        ))];
        self.comm.allreduce_f64(&mut ok);
        if ok[0] as usize != self.comm.size() {
            return Err(Error::Invalid(format!(
                "the {} processes do not all see the same training data (rank {} has {} examples, fingerprint {:016x}); give every process the same files",
                self.comm.size(),
                self.comm.rank(),
                id.0,
                id.1
            )));
        }
        Ok(())
    }

    /// Whether any process's flag is set (every process gets the same answer).
    pub(super) fn any(&self, flag: bool) -> bool {
        if !self.distributed() {
            return flag;
        }
        let mut b = [f64::from(u8::from(flag))];
        self.comm.allreduce_f64(&mut b);
        b[0] > 0.0
    }

    /// One global batch `idx` on this process's share: gradients, their sum over the
    /// processes, the update (skipped when the loss is not finite), and the batch's
    /// running sums added to `sums`. `seed` and `step` give dropout's key.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn step(
        &self,
        net: &mut Net,
        train: &Dataset,
        idx: &[usize],
        seed: u64,
        lr: f32,
        sums: &mut Sums,
        stop: bool,
    ) -> Result<Reduced, Error> {
        let split = self
            .split
            .as_ref()
            .ok_or_else(|| Error::internal("a distributed step without its split step"))?;
        let (k, r) = (self.comm.size(), self.comm.rank());
        let mine = &idx[dist::share(idx.len(), r, k)];
        let (grad_len, upd_len) = split.buffer_lens(net);
        let mut part = sums.clone();
        part.reset();
        let (mut grads, updated) = if mine.is_empty() {
            (vec![0.0; grad_len], vec![0.0; upd_len])
        } else {
            let (xs, ys) = train.gather(mine)?;
            let w = train.gather_weights(mine)?;
            let key = rng_key(dist::rank_seed(seed, r), net.step());
            let g = split.gradients(net, &xs, &ys, w.as_ref(), key)?;
            part.add(
                g.output.loss,
                &g.output.output_losses,
                &g.output.metric_states,
                g.examples,
            );
            let n = g.examples as f64;
            (
                g.grads,
                g.updated.iter().map(|&v| f64::from(v) * n).collect(),
            )
        };
        // [count, sums…, updated × examples…, stop]
        let nv = part.values.len();
        let mut stats = Vec::with_capacity(2 + nv + upd_len);
        stats.push(part.count);
        stats.extend(&part.values);
        stats.extend(&updated);
        stats.push(f64::from(u8::from(stop)));
        self.comm.allreduce_f64(&mut stats);
        self.comm.allreduce_f32(&mut grads);
        let count = stats[0];
        let loss = (stats[1] / count.max(1.0)) as f32;
        if loss.is_finite() {
            let upd: Vec<f32> = stats[1 + nv..1 + nv + upd_len]
                .iter()
                .map(|v| (v / count) as f32)
                .collect();
            split.apply(net, &grads, count as usize, &upd, lr)?;
        }
        sums.count += count;
        sums.values
            .iter_mut()
            .zip(&stats[1..])
            .for_each(|(s, v)| *s += v);
        Ok(Reduced {
            loss,
            stop: stats[1 + nv + upd_len] > 0.0,
        })
    }

    /// Validation: each process evaluates its share of `val` (in batches of its share
    /// of `batch_size`), the running sums are added over the processes.
    pub(super) fn validate(
        &self,
        net: &Net,
        val: &Dataset,
        batch_size: usize,
    ) -> Result<Logs, Error> {
        if !self.distributed() {
            return net.evaluate(val, Some(batch_size));
        }
        let (k, r) = (self.comm.size(), self.comm.rank());
        let s = dist::share(val.len(), r, k);
        let mut t =
            net.evaluate_tally(&val.slice(s.start, s.end), Some((batch_size / k).max(1)))?;
        let mut b = Vec::with_capacity(1 + t.values.len());
        b.push(t.count);
        b.extend(&t.values);
        self.comm.allreduce_f64(&mut b);
        t.count = b[0];
        t.values.copy_from_slice(&b[1..]);
        Ok(net.tally_logs(&t))
    }
}
