//! In-place updates: outputs written straight into donated inputs' memory.

use super::{Access, BufKind, Kernel, Plan, Sink, reads, row_major, writes};
use crate::dim::Dim;

impl Plan {
    /// Is `a` a plain row-major view of a whole buffer with `shape`?
    fn whole_contiguous(&self, a: &Access, shape: &[Dim]) -> bool {
        let rm = row_major(shape);
        self.sizes[a.offset].as_const() == Some(0)
            && a.strides
                .iter()
                .zip(shape.iter().zip(&rm))
                .all(|(&s, (d, r))| d.as_const() == Some(1) || self.sizes[s] == *r)
    }

    /// Lets outputs be written straight into the memory of inputs the caller donates
    /// (`(input, output)` pairs, e.g. a parameter and its updated value): the in-place
    /// optimizer update. A pair is accepted only when it is safe: the output is a whole
    /// contiguous buffer of the input's shape, written by one elementwise loop that reads
    /// the input (if at all) at the very element it writes, and nothing later reads the
    /// input. Returns the accepted pairs.
    pub fn donate(&mut self, pairs: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let mut accepted = Vec::new();
        for &(inp, out) in pairs {
            let Some(bi) = self.bufs.iter().position(|b| *b == BufKind::Input(inp)) else {
                continue;
            };
            let Some((oa, _)) = self.outputs.get(out).cloned() else {
                continue;
            };
            let bo = oa.buf;
            if !matches!(self.bufs[bo], BufKind::Arena { .. })
                || accepted.iter().any(|&(i, _)| i == inp)
            {
                continue;
            }
            let out_node = self.func.outputs[out].1;
            let shape = self.func.nodes[out_node].ty.shape.clone();
            if self.func.inputs[inp].ty.shape != shape || !self.whole_contiguous(&oa, &shape) {
                continue;
            }
            let writers: Vec<usize> = (0..self.kernels.len())
                .filter(|&j| writes(&self.kernels[j]).contains(&bo))
                .collect();
            let [k] = writers[..] else { continue };
            let Kernel::Loop(l) = &self.kernels[k] else {
                continue;
            };
            if l.epilogue.is_some() {
                continue;
            }
            let Sink::Store(sink) = &l.sink else { continue };
            let same_element = |a: &Access| a.offset == sink.offset && a.strides == sink.strides;
            let safe = self.kernels.iter().enumerate().all(|(j, kern)| {
                reads(kern)
                    .into_iter()
                    .filter(|a| a.buf == bi)
                    .all(|a| j < k || (j == k && same_element(a)))
            }) && self
                .outputs
                .iter()
                .enumerate()
                .all(|(o, (a, _))| o == out || a.buf != bi);
            if safe {
                self.bufs[bo] = BufKind::Input(inp);
                accepted.push((inp, out));
            }
        }
        accepted
    }
}
