//! In-place updates: outputs written straight into donated inputs' memory.

use std::collections::{HashMap, HashSet};

use super::{Access, BufId, BufKind, Kernel, Plan, Sink, reads, row_major, writes};
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
        // Each input's buffer, each buffer's writers and readers, and how many outputs
        // view each buffer, looked up once (linear in the plan, whatever the pairs).
        let mut input_buf: HashMap<usize, BufId> = HashMap::new();
        for (b, kind) in self.bufs.iter().enumerate() {
            if let BufKind::Input(i) = kind {
                input_buf.entry(*i).or_insert(b);
            }
        }
        let mut writers: HashMap<BufId, Vec<usize>> = HashMap::new();
        let mut readers: HashMap<BufId, Vec<(usize, &Access)>> = HashMap::new();
        for (j, kern) in self.kernels.iter().enumerate() {
            for b in writes(kern) {
                writers.entry(b).or_default().push(j);
            }
            for a in reads(kern) {
                readers.entry(a.buf).or_default().push((j, a));
            }
        }
        let mut output_views: HashMap<BufId, usize> = HashMap::new();
        for (a, _) in &self.outputs {
            *output_views.entry(a.buf).or_default() += 1;
        }
        let mut accepted = Vec::new();
        let mut taken = HashSet::new();
        for &(inp, out) in pairs {
            let Some(&bi) = input_buf.get(&inp) else {
                continue;
            };
            let Some((oa, _)) = self.outputs.get(out) else {
                continue;
            };
            let bo = oa.buf;
            if !matches!(self.bufs[bo], BufKind::Arena { .. }) || taken.contains(&inp) {
                continue;
            }
            let out_node = self.func.outputs[out].1;
            let shape = self.func.nodes[out_node].ty.shape.clone();
            if self.func.inputs[inp].ty.shape != shape || !self.whole_contiguous(oa, &shape) {
                continue;
            }
            let [k] = writers.get(&bo).map_or(&[][..], |w| &w[..]) else {
                continue;
            };
            let k = *k;
            let Kernel::Loop(l) = &self.kernels[k] else {
                continue;
            };
            if l.epilogue.is_some() {
                continue;
            }
            let Sink::Store(sink) = &l.sink else { continue };
            // A merged nest stores several values: the one into `bo` is the one to check.
            let sink = std::iter::once(sink)
                .chain(l.also.iter().map(|s| &s.access))
                .find(|a| a.buf == bo)
                .unwrap_or(sink);
            let same_element = |a: &Access| a.offset == sink.offset && a.strides == sink.strides;
            let own_view = usize::from(oa.buf == bi);
            let safe = readers
                .get(&bi)
                .map_or(&[][..], |r| &r[..])
                .iter()
                .all(|&(j, a)| j < k || (j == k && same_element(a)))
                && output_views.get(&bi).copied().unwrap_or(0) == own_view;
            if safe {
                self.bufs[bo] = BufKind::Input(inp);
                taken.insert(inp);
                accepted.push((inp, out));
            }
        }
        accepted
    }
}
