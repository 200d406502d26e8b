//! Counted loops in CLIF, the loop index in a Variable.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value, types};
use cranelift_frontend::Variable;

use super::Gen;

impl Gen<'_> {
    /// `for var in 0..n { body }` with the loop index in a Variable.
    pub(super) fn counted_loop(
        &mut self,
        n: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) -> Variable {
        let zero = self.b.ins().iconst(types::I64, 0);
        self.counted_loop_from(zero, n, step, body)
    }

    /// `for var in start..n { body }`.
    pub(super) fn counted_loop_from(
        &mut self,
        start: Value,
        n: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value),
    ) -> Variable {
        let var = self.b.declare_var(types::I64);
        self.b.def_var(var, start);
        let header = self.b.create_block();
        let body_b = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, step);
        let cond = self.b.ins().icmp(IntCC::SignedLessThanOrEqual, next, n);
        self.b.ins().brif(cond, body_b, &[], exit, &[]);
        self.b.switch_to_block(body_b);
        let i = self.b.use_var(var);
        body(self, i);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(body_b);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        var
    }

    /// Continues a loop variable from its current value up to `n` (step 1): the tail.
    pub(super) fn tail_loop(
        &mut self,
        var: Variable,
        n: Value,
        body: impl FnOnce(&mut Self, Value),
    ) {
        let header = self.b.create_block();
        let body_b = self.b.create_block();
        let exit = self.b.create_block();
        self.b.ins().jump(header, &[]);
        self.b.switch_to_block(header);
        let i = self.b.use_var(var);
        let cond = self.b.ins().icmp(IntCC::SignedLessThan, i, n);
        self.b.ins().brif(cond, body_b, &[], exit, &[]);
        self.b.switch_to_block(body_b);
        let i = self.b.use_var(var);
        body(self, i);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
        self.b.ins().jump(header, &[]);
        self.b.seal_block(body_b);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }
}
