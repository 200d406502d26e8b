//! The plan's textual form (`kiln ir --stage kernels`).

use std::fmt::Write;

use super::{
    Access, BufKind, CallKernel, Epilogue, GemmKernel, Kernel, LoopKernel, Plan,
    SMALL_GEMM_MAX_ROWS, Sink, Slot,
};

impl Plan {
    fn fmt_access(&self, a: &Access) -> String {
        let strides: Vec<String> = a
            .strides
            .iter()
            .map(|&s| self.sizes[s].to_string())
            .collect();
        let off = &self.sizes[a.offset];
        let off = if off.as_const() == Some(0) {
            String::new()
        } else {
            format!("+{off}")
        };
        format!("b{}{off}[{}]", a.buf, strides.join(","))
    }

    fn print_epilogue(&self, s: &mut String, e: &Epilogue, what: &str) {
        let l = &e.kernel;
        let nodes: Vec<String> = l.nodes.iter().map(|n| format!("%{n}")).collect();
        let _ = writeln!(
            s,
            "      epilogue fuses {} -> store {} (load{} = {what})",
            nodes.join(" "),
            self.fmt_access(l.sink_access()),
            e.acc
        );
        for (j, a) in l.loads.iter().enumerate() {
            let _ = writeln!(s, "      load{j} = {}", self.fmt_access(a));
        }
        let ops: Vec<String> = l.expr.iter().map(|e| format!("{e:?}")).collect();
        let _ = writeln!(s, "      expr {}", ops.join("; "));
    }

    /// Kernel `k`'s first line in the printed form, without its indent.
    pub fn kernel_line(&self, k: usize) -> String {
        let mut s = String::new();
        match self.kernels.get(k) {
            Some(Kernel::Loop(l)) => self.print_loop(&mut s, k, l),
            Some(Kernel::Gemm(g)) => self.print_gemm(&mut s, k, g),
            Some(Kernel::Call(c)) => self.print_call(&mut s, k, c),
            Some(Kernel::Attention(a)) => self.print_attention(&mut s, k, a),
            Some(Kernel::Norm(n)) => self.print_norm(&mut s, k, n),
            None => {}
        }
        s.lines().next().unwrap_or_default().trim().to_string()
    }

    /// The textual form printed by `kiln ir --stage kernels`.
    pub fn print(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "plan @{} ({} kernels, {} buffers)",
            self.func.name,
            self.kernels.len(),
            self.bufs.len()
        );
        for (i, b) in self.bufs.iter().enumerate() {
            match b {
                BufKind::Input(k) => {
                    let _ = writeln!(s, "  b{i} = input \"{}\"", self.func.inputs[*k].name);
                }
                BufKind::Arena { len } => {
                    let _ = writeln!(s, "  b{i} = arena[{}]", self.sizes[*len]);
                }
            }
        }
        for (i, k) in self.kernels.iter().enumerate() {
            match k {
                Kernel::Loop(l) => self.print_loop(&mut s, i, l),
                Kernel::Gemm(g) => self.print_gemm(&mut s, i, g),
                Kernel::Call(c) => self.print_call(&mut s, i, c),
                Kernel::Attention(a) => self.print_attention(&mut s, i, a),
                Kernel::Norm(n) => self.print_norm(&mut s, i, n),
            }
        }
        let outs: Vec<String> = self
            .func
            .outputs
            .iter()
            .zip(&self.outputs)
            .map(|((n, _), (a, _))| format!("\"{n}\" = {}", self.fmt_access(a)))
            .collect();
        let _ = writeln!(s, "  return {}", outs.join(", "));
        s
    }

    /// A shape given as size-table slots: `d0, d1, …`.
    fn fmt_shape(&self, slots: &[Slot]) -> String {
        slots
            .iter()
            .map(|&x| self.sizes[x].to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn print_loop(&self, s: &mut String, i: usize, l: &LoopKernel) {
        let sink = match &l.sink {
            Sink::Store(a) => format!("store {}", self.fmt_access(a)),
            Sink::Reduce(op, a) => format!(
                "reduce_{} {}",
                format!("{op:?}").to_lowercase(),
                self.fmt_access(a)
            ),
        };
        let nodes: Vec<String> = l.nodes.iter().map(|n| format!("%{n}")).collect();
        let _ = writeln!(
            s,
            "  k{i}: loop [{}] fuses {} -> {sink}",
            self.fmt_shape(&l.space),
            nodes.join(" ")
        );
        for (j, a) in l.loads.iter().enumerate() {
            let _ = writeln!(s, "      load{j} = {}", self.fmt_access(a));
        }
        let ops: Vec<String> = l.expr.iter().map(|e| format!("{e:?}")).collect();
        let _ = writeln!(s, "      expr {}", ops.join("; "));
        for st in &l.also {
            let _ = writeln!(
                s,
                "      also store {} = node {}",
                self.fmt_access(&st.access),
                st.node
            );
        }
        if let Some(e) = &l.epilogue {
            self.print_epilogue(s, e, "the reduced value");
        }
    }

    fn print_gemm(&self, s: &mut String, i: usize, g: &GemmKernel) {
        let _ = writeln!(
            s,
            "  k{i}: gemm %{} batch [{}] m={} k={} n={}: {} x {} -> b{} ({}{})",
            g.node,
            self.fmt_shape(&g.batch),
            self.sizes[g.m],
            self.sizes[g.k],
            self.sizes[g.n],
            self.fmt_access(&g.a),
            self.fmt_access(&g.b),
            g.c,
            self.gemm_routine(g),
            if g.small.is_some() {
                format!("; generated loop when m <= {SMALL_GEMM_MAX_ROWS}")
            } else {
                String::new()
            }
        );
        if let Some(e) = &g.epilogue {
            self.print_epilogue(s, e, "the product");
        }
        for c in &g.also {
            let _ = writeln!(
                s,
                "    and %{} n={}: same A x {} -> b{}",
                c.node,
                self.sizes[c.n],
                self.fmt_access(&c.b),
                c.c
            );
            if let Some(e) = &c.epilogue {
                self.print_epilogue(s, e, "the product");
            }
        }
    }

    /// Which routine runs a product (chosen at call time by shape: `jit::gemm::prefer`;
    /// a CPU without FMA always takes matrixmultiply).
    fn gemm_routine(&self, g: &GemmKernel) -> &'static str {
        let k = self.sizes[g.k].as_const();
        let own = std::iter::once((g.n, &g.b));
        let cols = own.chain(g.also.iter().map(|c| (c.n, &c.b)));
        let fits = cols.map(|(n, b)| match (k, self.sizes[n].as_const()) {
            (Some(k), Some(n)) if !crate::jit::gemm::shape_fits(k as usize, n as usize) => {
                Some(false)
            }
            // A B copied first needs enough rows (`gemm::prefer`).
            (Some(_), Some(n)) if n > 1 && b.known.last() != Some(&Some(1)) => None,
            (Some(_), Some(_)) => Some(true),
            _ => None,
        });
        match fits.collect::<Vec<Option<bool>>>() {
            _ if !g.batch.is_empty() => "matrixmultiply",
            f if f.contains(&Some(false)) => "matrixmultiply",
            f if f.iter().all(|&x| x == Some(true)) => "kiln gemm",
            _ => "kiln gemm or matrixmultiply by shape",
        }
    }

    fn print_call(&self, s: &mut String, i: usize, c: &CallKernel) {
        let args: Vec<String> = c.args.iter().map(|a| self.fmt_access(a)).collect();
        let op = format!("{:?}", self.func.nodes[c.node].op);
        let op = op
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("")
            .to_lowercase();
        // A tuned routine across the thread team, or the reference implementation.
        let on = if crate::jit::routine::on_team(&self.func.nodes[c.node].op) {
            "team"
        } else {
            "reference"
        };
        let _ = writeln!(
            s,
            "  k{i}: call {op} ({on}) %{}({}) -> b{} [{}]",
            c.node,
            args.join(", "),
            c.out,
            self.fmt_shape(&c.out_shape)
        );
    }

    fn print_norm(&self, s: &mut String, i: usize, n: &super::NormKernel) {
        let w = |a: &Option<Access>| a.as_ref().map_or("-".to_string(), |a| self.fmt_access(a));
        let _ = writeln!(
            s,
            "  k{i}: layer_norm %{}..%{} rows [{}] n={} eps={}{}: x {} gamma {} beta {} -> {}",
            n.nodes[0],
            n.nodes[1],
            self.fmt_shape(&n.rows),
            self.sizes[n.n],
            n.eps,
            if n.rms { ", rms" } else { "" },
            self.fmt_access(&n.x),
            w(&n.gamma),
            w(&n.beta),
            self.fmt_access(&n.out),
        );
        if !n.stores.is_empty() {
            let stores: Vec<String> = (n.stores.iter())
                .map(|(p, a)| format!("{p:?} -> {}", self.fmt_access(a)))
                .collect();
            let _ = writeln!(s, "      stores {}", stores.join(", "));
        }
    }

    fn print_attention(&self, s: &mut String, i: usize, a: &super::AttnKernel) {
        let stores: Vec<String> = a
            .stores
            .iter()
            .map(|(st, b)| format!("{st:?} -> b{b}"))
            .collect();
        let _ = writeln!(
            s,
            "  k{i}: {} %{}..%{} batch [{}] tq={} tk={} d={} dv={}{}: q {}{} k {} v {} -> {}",
            if a.grad.is_some() {
                "attention_grad"
            } else {
                "attention"
            },
            a.nodes[0],
            a.nodes[1],
            self.fmt_shape(&a.batch),
            self.sizes[a.tq],
            self.sizes[a.tk],
            self.sizes[a.d],
            self.sizes[a.dv],
            if a.causal.is_some() { ", causal" } else { "" },
            self.fmt_access(&a.q),
            a.q_scale.map_or(String::new(), |c| format!(" × {c}")),
            self.fmt_access(&a.k),
            self.fmt_access(&a.v),
            self.fmt_access(&a.out),
        );
        if !stores.is_empty() {
            let _ = writeln!(s, "      stores {}", stores.join(", "));
        }
        if let Some(g) = &a.grad {
            let _ = writeln!(
                s,
                "      from g {} max {} sum {}; also -> dk {} dv {}",
                self.fmt_access(&g.g),
                self.fmt_access(&g.max),
                self.fmt_access(&g.sum),
                self.fmt_access(&g.dk),
                self.fmt_access(&g.dv),
            );
        }
    }
}
