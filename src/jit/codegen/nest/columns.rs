//! Column sums in registers: a loop that reduces over every axis between its first and
//! its last (`plan/columns.rs` makes a bias's gradient `[n / w, rows, w] → [n / w, w]`)
//! keeps the `w` sums of its block of columns in vector registers over all its rows and
//! stores them once, instead of loading, adding and storing the output row after every
//! input row. Each sum adds the same terms in the same order as the row-by-row nest, so
//! the bits are the same.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::Variable;

use super::{Gen, Nest, flags};
use crate::jit::plan::{LoopKernel, Sink};

/// The widest block of columns kept in registers (eight f32x4 accumulators).
const MAX_WIDTH: i64 = 32;

/// The block width `w` of a column sum: a reduction whose output is `[blocks, w]`
/// contiguous (stride `w` on the first axis, 1 on the last, 0 between), of rank 3 or
/// more, with `w` a multiple of 4 up to [`MAX_WIDTH`] and every load moving by 0 or 1
/// along the inner axis.
pub(super) fn column_width(k: &LoopKernel) -> Option<i64> {
    let Sink::Reduce(_, out) = &k.sink else {
        return None;
    };
    let rank = k.space.len();
    let inner = rank.checked_sub(1)?;
    let w = out.known[0]?;
    let shaped = rank >= 3
        && (4..=MAX_WIDTH).contains(&w)
        && w % 4 == 0
        && out.known[inner] == Some(1)
        && out.known[1..inner].iter().all(|&s| s == Some(0))
        && k.epilogue.is_none()
        && k.also.is_empty();
    let vectorizable = k
        .loads
        .iter()
        .all(|a| matches!(a.known[inner], Some(0) | Some(1)));
    (shaped && vectorizable).then_some(w)
}

impl Gen<'_> {
    /// The column sums when the inner extent is the block width `w` at run time, else
    /// the nest row by row.
    pub(super) fn columns_or_rows(&mut self, nest: &Nest, w: i64) {
        let inner = nest.k.space.len() - 1;
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let done = self.b.create_block();
        let is_w = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, nest.extents[inner], w);
        self.b.ins().brif(is_w, fast, &[], slow, &[]);
        self.b.seal_block(fast);
        self.b.seal_block(slow);
        self.b.switch_to_block(fast);
        self.column_blocks(nest, w);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(slow);
        self.outer(nest, 0, Vec::new());
        self.b.ins().jump(done, &[]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
    }

    /// Over the outermost axis (`self.range` when set): load the block's sums, add
    /// every row into them, store them.
    fn column_blocks(&mut self, nest: &Nest, w: i64) {
        let (start, n) = match self.range {
            Some((lo, hi)) => (lo, hi),
            None => (self.b.ins().iconst(types::I64, 0), nest.extents[0]),
        };
        let sink_idx = nest.k.loads.len();
        let vectors = (w / 4) as usize;
        self.counted_loop_from(start, n, 1, |g, i0| {
            let out = g.advance(nest.bases[sink_idx], &nest.accesses[sink_idx], &[i0]);
            let accs: Vec<Variable> = (0..vectors)
                .map(|v| {
                    let var = g.b.declare_var(types::F32X4);
                    let x = g.b.ins().load(types::F32X4, flags(), out, 16 * v as i32);
                    g.b.def_var(var, x);
                    var
                })
                .collect();
            g.column_rows(nest, 1, vec![i0], &accs);
            for (v, &var) in accs.iter().enumerate() {
                let x = g.b.use_var(var);
                g.b.ins().store(flags(), x, out, 16 * v as i32);
            }
        });
    }

    /// The loops over the reduced axes (from `axis` to the inner one), then one row:
    /// each vector of its `w` columns added into its accumulator.
    fn column_rows(&mut self, nest: &Nest, axis: usize, idx: Vec<Value>, accs: &[Variable]) {
        let k = nest.k;
        let inner = k.space.len() - 1;
        if axis < inner {
            self.counted_loop(nest.extents[axis], 1, |g, i| {
                let mut idx = idx.clone();
                idx.push(i);
                g.column_rows(nest, axis + 1, idx, accs);
            });
            return;
        }
        let row = self.row_bases(nest, &idx);
        let mut scalar = nest.scalar.clone();
        for (e, &lvl) in nest.levels.iter().enumerate() {
            if lvl == 1 {
                scalar[e] = Some(self.expr_scalar(&k.expr[e], &scalar, &idx, &[], &row));
            }
        }
        let vecs: Vec<Option<Value>> = scalar
            .iter()
            .map(|s| s.map(|s| self.b.ins().splat(types::F32X4, s)))
            .collect();
        let Sink::Reduce(op, _) = &k.sink else {
            unreachable!("a column sum reduces")
        };
        for (v, &var) in accs.iter().enumerate() {
            let j = self.b.ins().iconst(types::I64, 4 * v as i64);
            let mut vals = vecs.clone();
            let term = self.fused_term(k, &mut vals, types::F32X4);
            let x = self.expr_all(k, &mut vals, &idx, Some(j), &row, true);
            let term = term.map(|(a, b)| (vals[a].expect("a"), vals[b].expect("b")));
            let acc = self.b.use_var(var);
            let r = self.accumulate(*op, acc, x, term);
            self.b.def_var(var, r);
        }
    }
}
