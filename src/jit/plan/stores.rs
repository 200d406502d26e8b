//! Loops that feed each other as one loop nest with several stores: an elementwise
//! loop whose stored value a later loop over the same space reads element for element
//! runs inside that loop, its value computed inline and stored as one more sink (Adam's
//! new moments and the parameter update they feed: one sweep instead of three). A store
//! nobody reads any more (the value had no other reader) is dropped.

use std::collections::HashSet;

use super::*;

impl Builder<'_> {
    /// Merges each plain store loop into the first later kernel that reads what it
    /// stores, when that kernel is a plain store loop over the same space reading each
    /// stored value through the very access it was stored with, and the loop can move
    /// down to it: nothing in between reads what it stores or writes what it reads or
    /// stores. Within the merged nest every element's loads come before its stores, and
    /// no access of one part touches a buffer the other part stores, so each element
    /// sees the values it saw before.
    pub(super) fn fuse_stores(&mut self, outputs: &[(Access, Vec<Slot>)]) {
        let mut index = Index::new(&self.kernels);
        // Kernels merge only into later ones: the walk never meets a removed one.
        let removed: Vec<bool> = (0..self.kernels.len())
            .map(|i| {
                let j = self.store_reader(i, &index);
                if let Some(j) = j {
                    index.merged(&self.kernels[i], j);
                    self.merge_stores(i, j);
                }
                j.is_some()
            })
            .collect();
        let mut k = 0;
        self.kernels.retain(|_| (!removed[k], k += 1).0);
        self.drop_dead_stores(outputs);
    }

    /// Kernel `i` as a loop that stores element for element (no reduction, no epilogue).
    fn plain_store(&self, i: usize) -> Option<&LoopKernel> {
        match &self.kernels[i] {
            Kernel::Loop(l) if matches!(l.sink, Sink::Store(_)) && l.epilogue.is_none() => Some(l),
            _ => None,
        }
    }

    /// The kernel loop `i` can merge into (see [`Self::fuse_stores`]), if any: the first
    /// later reader of what it stores, when no kernel in between writes what the loop
    /// reads or stores.
    fn store_reader(&self, i: usize, index: &Index) -> Option<usize> {
        let l = self.plain_store(i)?;
        let stored: Vec<&Access> = stores(l).collect();
        let stored_bufs: HashSet<BufId> = stored.iter().map(|a| a.buf).collect();
        let loaded: HashSet<BufId> = l.loads.iter().map(|a| a.buf).collect();
        let k = (stored_bufs.iter())
            .filter_map(|&b| index.first_after(&index.readers, b, i))
            .min()?;
        let clash = (stored_bufs.iter().chain(&loaded)).any(|&b| {
            index
                .first_after(&index.writers, b, i)
                .is_some_and(|w| w < k)
        });
        if clash {
            return None;
        }
        let m = self.plain_store(k)?;
        let last_reads_stored = match m.expr.last() {
            Some(Expr::Load(x)) => stored_bufs.contains(&m.loads[*x].buf),
            _ => false,
        };
        let ok = m.space == l.space
            && !last_reads_stored
            && m.loads
                .iter()
                .all(|a| !stored_bufs.contains(&a.buf) || stored.contains(&a))
            && stores(m).all(|a| !stored_bufs.contains(&a.buf) && !loaded.contains(&a.buf));
        ok.then_some(k)
    }

    /// Loop `i` becomes part of loop `j`: its expression first, `j`'s after it with each
    /// load of a value `i` stores replaced by that value, `i`'s stores added to `j`'s.
    /// Loads and expression nodes the two share are kept once.
    fn merge_stores(&mut self, i: usize, j: usize) {
        let Kernel::Loop(a) = std::mem::replace(&mut self.kernels[i], Kernel::removed()) else {
            unreachable!("kernel {i} is a loop")
        };
        let Kernel::Loop(b) = &mut self.kernels[j] else {
            unreachable!("kernel {j} is a loop")
        };
        let a_stores: Vec<(usize, Access)> = std::iter::once((a.expr.len() - 1, a.sink_access()))
            .chain(a.also.iter().map(|s| (s.node, &s.access)))
            .map(|(n, acc)| (n, acc.clone()))
            .collect();
        let fed: Vec<Option<usize>> = (b.loads.iter())
            .map(|l| a_stores.iter().find(|(_, s)| s == l).map(|(n, _)| *n))
            .collect();
        let j = join(&a, b, &fed);
        let a_stores: Vec<(usize, Access)> = (a_stores.into_iter())
            .map(|(n, acc)| (j.amap[n], acc))
            .collect();
        let bmap = j.bmap;
        let mut also: Vec<Store> = a_stores
            .into_iter()
            .map(|(node, access)| Store { node, access })
            .collect();
        also.extend(b.also.iter().map(|s| Store {
            node: bmap[s.node],
            access: s.access.clone(),
        }));
        b.loads = j.loads;
        b.expr = j.expr;
        b.also = also;
        b.nodes.extend(a.nodes);
        b.nodes.sort();
        b.nodes.dedup();
    }

    /// Drops the extra stores whose buffers nothing reads and that are no output (a
    /// value only its merged reader used); a buffer no kernel writes any more takes no
    /// room.
    fn drop_dead_stores(&mut self, outputs: &[(Access, Vec<Slot>)]) {
        let mut live: HashSet<BufId> = outputs.iter().map(|(a, _)| a.buf).collect();
        for k in &self.kernels {
            live.extend(reads(k).iter().map(|a| a.buf));
        }
        let mut dropped = Vec::new();
        for k in &mut self.kernels {
            if let Kernel::Loop(l) = k {
                l.also.retain(|s| {
                    let keep = live.contains(&s.access.buf);
                    if !keep {
                        dropped.push(s.access.buf);
                    }
                    keep
                });
            }
        }
        if dropped.is_empty() {
            return;
        }
        let written: HashSet<BufId> = self.kernels.iter().flat_map(writes).collect();
        let zero = self.slot(&Dim::konst(0));
        for b in dropped {
            if !written.contains(&b)
                && let BufKind::Arena { len } = &mut self.bufs[b]
            {
                *len = zero;
            }
        }
    }
}

/// Which kernels read and write each buffer (indices in order), so that finding a
/// loop's first reader and checking what lies in between takes a search per buffer,
/// not a walk over the rest of the plan (quadratic in the model: 0.6 s of the 1 s a
/// chain of 1,000 dense layers took to compile).
struct Index {
    readers: HashMap<BufId, Vec<usize>>,
    writers: HashMap<BufId, Vec<usize>>,
}

impl Index {
    fn new(kernels: &[Kernel]) -> Index {
        let mut ix = Index {
            readers: HashMap::new(),
            writers: HashMap::new(),
        };
        for (k, kern) in kernels.iter().enumerate() {
            for a in reads(kern) {
                push(&mut ix.readers, a.buf, k);
            }
            for b in writes(kern) {
                push(&mut ix.writers, b, k);
            }
        }
        ix
    }

    /// The first kernel after `i` in `list`'s entry for `b`.
    fn first_after(&self, list: &HashMap<BufId, Vec<usize>>, b: BufId, i: usize) -> Option<usize> {
        let ks = list.get(&b)?;
        let at = ks.partition_point(|&k| k <= i);
        ks.get(at).copied()
    }

    /// Loop `l` (before `j`) merged into `j`: `j` now reads what `l` reads and writes
    /// what `l` writes. (`l`'s own entries lie before every later query.)
    fn merged(&mut self, l: &Kernel, j: usize) {
        for a in reads(l) {
            insert(&mut self.readers, a.buf, j);
        }
        for b in writes(l) {
            insert(&mut self.writers, b, j);
        }
    }
}

/// Appends `k` to `b`'s list (kernels in order: at most once each).
fn push(map: &mut HashMap<BufId, Vec<usize>>, b: BufId, k: usize) {
    let v = map.entry(b).or_default();
    if v.last() != Some(&k) {
        v.push(k);
    }
}

/// Inserts `k` into `b`'s sorted list, once.
fn insert(map: &mut HashMap<BufId, Vec<usize>>, b: BufId, k: usize) {
    let v = map.entry(b).or_default();
    if let Err(at) = v.binary_search(&k) {
        v.insert(at, k);
    }
}

/// Every access a store loop stores through: its sink, then its extra stores.
fn stores(l: &LoopKernel) -> impl Iterator<Item = &Access> {
    std::iter::once(l.sink_access()).chain(l.also.iter().map(|s| &s.access))
}

/// `e` with its operands renumbered through `map`.
fn renumber(e: &Expr, map: &[usize]) -> Expr {
    let m = |x: &usize| map[*x];
    match e {
        Expr::Unary(u, a) => Expr::Unary(*u, m(a)),
        Expr::Binary(op, a, b) => Expr::Binary(*op, m(a), m(b)),
        Expr::Cmp(c, a, b) => Expr::Cmp(*c, m(a), m(b)),
        Expr::Select(c, a, b) => Expr::Select(m(c), m(a), m(b)),
        Expr::Trunc(a) => Expr::Trunc(m(a)),
        Expr::Load(_) | Expr::Const(_) | Expr::Size(_) | Expr::Index(_) => e.clone(),
    }
}

/// Two loop bodies as one: `a`'s loads and expression, then `b`'s.
pub(super) struct Joined {
    pub(super) loads: Vec<Access>,
    pub(super) expr: Vec<Expr>,
    /// Where each node of `a`, and of `b`, went.
    pub(super) amap: Vec<usize>,
    pub(super) bmap: Vec<usize>,
}

/// `a`'s expression, then `b`'s with each load `x` for which `fed[x]` names a node of
/// `a` replaced by that node's value; loads and nodes the two share are kept once, and
/// `b`'s result is the last node (the caller makes sure it is not one of `a`'s).
pub(super) fn join(a: &LoopKernel, b: &LoopKernel, fed: &[Option<usize>]) -> Joined {
    let mut m = Merged::default();
    let mut amap = Vec::with_capacity(a.expr.len());
    for e in &a.expr {
        let e = match e {
            Expr::Load(x) => Expr::Load(m.load(&a.loads[*x])),
            e => renumber(e, &amap),
        };
        amap.push(m.node(e, false));
    }
    let mut bmap = Vec::with_capacity(b.expr.len());
    let last = b.expr.len() - 1;
    for (x, e) in b.expr.iter().enumerate() {
        let n = match e {
            Expr::Load(l) => match fed[*l] {
                Some(n) => amap[n],
                None => {
                    let l = m.load(&b.loads[*l]);
                    m.node(Expr::Load(l), x == last)
                }
            },
            e => m.node(renumber(e, &bmap), x == last),
        };
        bmap.push(n);
    }
    Joined {
        loads: m.loads,
        expr: m.expr,
        amap,
        bmap,
    }
}

/// The merged nest's loads and expression, each load and node kept once.
#[derive(Default)]
struct Merged {
    loads: Vec<Access>,
    expr: Vec<Expr>,
    /// Each node by its text (constants by their bits).
    seen: HashMap<String, usize>,
}

impl Merged {
    fn load(&mut self, a: &Access) -> usize {
        match self.loads.iter().position(|l| l == a) {
            Some(x) => x,
            None => {
                self.loads.push(a.clone());
                self.loads.len() - 1
            }
        }
    }

    /// The index of node `e`, an earlier equal node's unless `fresh` (the result must
    /// be the last node).
    fn node(&mut self, e: Expr, fresh: bool) -> usize {
        let key = match &e {
            Expr::Const(c) => format!("C{:x}", c.to_bits()),
            e => format!("{e:?}"),
        };
        if !fresh && let Some(&x) = self.seen.get(&key) {
            return x;
        }
        self.expr.push(e);
        let x = self.expr.len() - 1;
        self.seen.entry(key).or_insert(x);
        x
    }
}
