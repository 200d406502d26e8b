//! Reads the textual form of a [`Func`] back, so that IR can be kept and compared as
//! text (pass tests are an input function and its expected output, both as text).
//!
//! `print(parse(print(f)))` is `print(f)` for every function kiln builds. The reader
//! accepts what the printer writes, with any spacing and line breaks and `;` comments
//! to the end of a line. Op names come from [`op_name`], the printer's own table, so a
//! new op cannot be printed under a name the reader does not know. Every node's type is
//! checked against its shape rule (or, for ops whose type the builder chooses, against
//! the rule's consistency check), so a hand-edited function that the builder could not
//! have produced is an error at its line, not a surprise in a pass.
//!
//! Errors carry a line and a column; no input makes the reader panic, and its work is
//! linear in the text (dimension formulas are bounded by [`crate::dim::MAX_ATOMS`] and
//! their nesting by [`MAX_DEPTH`]).
//!
//! One ambiguity is inherited from the printer: a floor division whose dividend is a
//! single product (`b*s // 2`) prints like a product with a floor division in it, so the
//! reader takes `//` to bind to the factor just before it (`b * (s // 2)`). Both print
//! the same.

mod ops;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;

use super::{DType, Func, Id, InputInfo, Node, Op, Type, op_name};
use crate::dim::Dim;

/// How deeply parentheses may nest in one dimension formula.
pub const MAX_DEPTH: usize = 32;

/// A syntax or consistency error, at a 1-based line and column (in characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

type PResult<T> = Result<T, ParseError>;

/// Reads one function in the form [`Func::print`] writes.
pub fn parse(text: &str) -> PResult<Func> {
    let mut p = Parser {
        text,
        pos: 0,
        values: HashMap::new(),
        inputs: HashMap::new(),
        templates: ops::templates(),
    };
    p.func()
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// `%name` → the node it names, for the names defined so far.
    values: HashMap<&'a str, Id>,
    /// `%inK` → the input it names.
    inputs: HashMap<&'a str, usize>,
    /// One op of each kind with its printed name; the reader fills in the attributes.
    templates: Vec<(String, Op)>,
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl<'a> Parser<'a> {
    // ---- positions and errors ----

    fn error_at<T>(&self, pos: usize, msg: impl Into<String>) -> PResult<T> {
        let before = &self.text.as_bytes()[..pos.min(self.text.len())];
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        // Columns count characters: skip UTF-8 continuation bytes.
        let col = before[line_start..]
            .iter()
            .filter(|&&b| b & 0xC0 != 0x80)
            .count();
        Err(ParseError {
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            col: col + 1,
            msg: msg.into(),
        })
    }

    /// What the text holds at the cursor, for messages.
    fn found(&self) -> String {
        let rest = &self.text.as_bytes()[self.pos..];
        if rest.is_empty() {
            return "the end of the text".into();
        }
        let n = rest
            .iter()
            .take(24)
            .position(|b| b.is_ascii_whitespace())
            .unwrap_or(rest.len().min(24));
        format!("`{}`", String::from_utf8_lossy(&rest[..n.max(1)]))
    }

    fn error_here<T>(&mut self, what: &str) -> PResult<T> {
        self.skip_ws();
        let msg = format!("expected {what}, found {}", self.found());
        self.error_at(self.pos, msg)
    }

    // ---- tokens ----

    fn skip_ws(&mut self) {
        let b = self.text.as_bytes();
        while let Some(&c) = b.get(self.pos) {
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else if c == b';' {
                while b.get(self.pos).is_some_and(|&c| c != b'\n') {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        self.skip_ws();
        if self.text.as_bytes()[self.pos..].starts_with(lit.as_bytes()) {
            self.pos += lit.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, lit: &str) -> PResult<()> {
        if self.eat(lit) {
            Ok(())
        } else {
            self.error_here(&format!("`{lit}`"))
        }
    }

    /// Bytes from the cursor while `keep` holds (ASCII only, so a char boundary).
    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        let b = self.text.as_bytes();
        while b.get(self.pos).is_some_and(|&c| c.is_ascii() && keep(c)) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn word(&mut self) -> PResult<&'a str> {
        self.skip_ws();
        match self.take_while(is_name_byte) {
            "" => self.error_here("a name"),
            w => Ok(w),
        }
    }

    /// The next word, without consuming it.
    fn peek_word(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        let w = self.take_while(is_name_byte);
        self.pos = start;
        w
    }

    fn keyword(&mut self, k: &str) -> PResult<()> {
        if self.peek_word() == k {
            self.pos += k.len();
            Ok(())
        } else {
            self.error_here(&format!("`{k}`"))
        }
    }

    /// `key=`.
    fn key(&mut self, k: &str) -> PResult<()> {
        self.keyword(k)?;
        self.expect("=")
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> PResult<T> {
        self.skip_ws();
        let start = self.pos;
        let neg = self.text.as_bytes().get(self.pos) == Some(&b'-');
        self.pos += usize::from(neg);
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() {
            self.pos = start;
            return self.error_here(what);
        }
        match self.text[start..self.pos].parse() {
            Ok(v) => Ok(v),
            Err(_) => self.error_at(start, format!("{what} out of range")),
        }
    }

    fn usize(&mut self) -> PResult<usize> {
        self.number("a non-negative integer")
    }

    fn int(&mut self) -> PResult<i64> {
        self.number("an integer")
    }

    fn float(&mut self) -> PResult<f64> {
        self.skip_ws();
        let start = self.pos;
        let tok = self.take_while(|c| c.is_ascii_alphanumeric() || b".+-".contains(&c));
        match tok.parse() {
            Ok(v) => Ok(v),
            Err(_) => {
                self.pos = start;
                self.error_here("a number")
            }
        }
    }

    fn bool(&mut self) -> PResult<bool> {
        match self.peek_word() {
            "true" => self.keyword("true").map(|_| true),
            "false" => self.keyword("false").map(|_| false),
            _ => self.error_here("`true` or `false`"),
        }
    }

    /// A quoted name on one line (the printer writes names without escapes).
    fn string(&mut self) -> PResult<String> {
        self.expect("\"")?;
        let rest = &self.text[self.pos..];
        let end = rest.find(['"', '\n']).unwrap_or(rest.len());
        self.pos += end;
        if rest.as_bytes().get(end) != Some(&b'"') {
            return self.error_at(self.pos, "expected the closing `\"` on this line");
        }
        self.pos += 1;
        Ok(rest[..end].to_string())
    }

    /// `%name`, returning its position and the name.
    fn value_name(&mut self) -> PResult<(usize, &'a str)> {
        self.skip_ws();
        let pos = self.pos;
        if !self.eat("%") {
            return self.error_here("a value (`%name`)");
        }
        match self.take_while(|c| is_name_byte(c) || c == b'.') {
            "" => self.error_here("a value name after `%`"),
            n => Ok((pos, n)),
        }
    }

    /// `%name` of a value defined above.
    fn value_ref(&mut self) -> PResult<Id> {
        let (pos, name) = self.value_name()?;
        match self.values.get(name) {
            Some(&id) => Ok(id),
            None => self.error_at(pos, format!("%{name} is not defined above this use")),
        }
    }

    /// `(a, b, …)` or `[a, b, …]` of items read by `item`.
    fn list<T>(
        &mut self,
        open: &str,
        close: &str,
        mut item: impl FnMut(&mut Self) -> PResult<T>,
    ) -> PResult<Vec<T>> {
        self.expect(open)?;
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if !self.eat(",") {
                self.expect(close)?;
                return Ok(out);
            }
        }
    }

    fn bracketed<T>(&mut self, inner: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        self.expect("[")?;
        let v = inner(self)?;
        self.expect("]")?;
        Ok(v)
    }

    // ---- dimensions and types ----

    /// `dim := ['-'] term (('+' | '-') term)*`.
    fn dim(&mut self, depth: usize) -> PResult<Dim> {
        if depth > MAX_DEPTH {
            return self.error_here(&format!("at most {MAX_DEPTH} nested parentheses"));
        }
        let neg = self.eat("-");
        let mut d = self.term(depth)?;
        if neg {
            d = self.arith(d.neg())?;
        }
        loop {
            if self.eat("+") {
                let t = self.term(depth)?;
                d = self.arith(d.add(&t))?;
            } else if self.eat("-") {
                let t = self.term(depth)?;
                d = self.arith(d.sub(&t))?;
            } else {
                return Ok(d);
            }
        }
    }

    /// `term := factor ('*' factor)*`.
    fn term(&mut self, depth: usize) -> PResult<Dim> {
        let mut d = self.factor(depth)?;
        while self.eat("*") {
            let f = self.factor(depth)?;
            d = self.arith(d.mul(&f))?;
        }
        Ok(d)
    }

    /// `factor := primary ('//' int)*`: floor division binds to the factor before it.
    fn factor(&mut self, depth: usize) -> PResult<Dim> {
        self.skip_ws();
        let b = self.text.as_bytes().get(self.pos).copied();
        let mut d = match b {
            Some(b'(') => {
                self.pos += 1;
                let d = self.dim(depth + 1)?;
                self.expect(")")?;
                d
            }
            Some(c) if c.is_ascii_digit() => Dim::konst(self.int()?),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => Dim::sym(self.word()?),
            _ => return self.error_here("a dimension"),
        };
        while self.eat("//") {
            self.skip_ws();
            let pos = self.pos;
            let k = self.int()?;
            if k < 1 {
                return self.error_at(pos, "a floor division needs a positive divisor");
            }
            d = self.arith(d.floor_div(k))?;
        }
        Ok(d)
    }

    fn arith(&mut self, d: Result<Dim, crate::dim::Overflow>) -> PResult<Dim> {
        match d {
            Ok(d) => Ok(d),
            Err(_) => self.error_here("a smaller dimension (this formula overflows)"),
        }
    }

    fn dtype(&mut self) -> PResult<DType> {
        let w = self.peek_word();
        match DType::parse(w).filter(|d| d.name() == w) {
            Some(d) => self.keyword(w).map(|_| d),
            None => self.error_here("an element type (`f32`, `i32`, `i64`)"),
        }
    }

    /// `f32[batch, 3]`.
    fn ty(&mut self) -> PResult<Type> {
        let dtype = self.dtype()?;
        let shape = self.list("[", "]", |p| p.dim(0))?;
        Ok(Type::new(shape, dtype))
    }
    // ---- the function ----

    fn func(&mut self) -> PResult<Func> {
        self.keyword("func")?;
        self.expect("@")?;
        let name = self.take_while(|c| !c.is_ascii_whitespace() && c != b'(');
        if name.is_empty() {
            return self.error_here("the function's name after `@`");
        }
        let mut f = Func::new(name);
        let decls = self.list("(", ")", |p| p.input_decl())?;
        for (k, (pos, id, info)) in decls.into_iter().enumerate() {
            if self.inputs.insert(id, k).is_some() {
                return self.error_at(pos, format!("input %{id} is declared twice"));
            }
            f.inputs.push(info);
        }
        self.expect("{")?;
        while self.peek_word() != "return" {
            self.node(&mut f)?;
        }
        self.keyword("return")?;
        self.skip_ws();
        if self.text.as_bytes().get(self.pos) == Some(&b'"') {
            loop {
                let name = self.string()?;
                self.expect("=")?;
                let id = self.value_ref()?;
                f.outputs.push((name, id));
                if !self.eat(",") {
                    break;
                }
            }
        }
        self.expect("}")?;
        self.skip_ws();
        if self.pos < self.text.len() {
            return self.error_here("the end of the text after the function");
        }
        Ok(f)
    }

    /// `%in0: f32[batch, 3] "x"`.
    fn input_decl(&mut self) -> PResult<(usize, &'a str, InputInfo)> {
        let (pos, id) = self.value_name()?;
        self.expect(":")?;
        let ty = self.ty()?;
        let name = self.string()?;
        Ok((pos, id, InputInfo { name, ty }))
    }

    /// `%3 = op[attrs](%1, %2) : type`, or `%0 = input %in0`.
    fn node(&mut self, f: &mut Func) -> PResult<()> {
        let (pos, name) = self.value_name()?;
        if self.values.contains_key(name) {
            return self.error_at(pos, format!("%{name} is defined twice"));
        }
        self.expect("=")?;
        self.skip_ws();
        let op_pos = self.pos;
        let op_word = self.word()?;
        let node = if op_word == op_name(&Op::Input(0)) {
            let (ipos, iname) = self.value_name()?;
            let Some(&k) = self.inputs.get(iname) else {
                return self.error_at(ipos, format!("no input is declared as %{iname}"));
            };
            Node {
                op: Op::Input(k),
                args: vec![],
                ty: f.inputs[k].ty.clone(),
            }
        } else {
            let mut op = self.op(op_word, op_pos)?;
            self.skip_ws();
            let args = if self.text.as_bytes().get(self.pos) == Some(&b'(') {
                self.list("(", ")", |p| p.value_ref())?
            } else {
                vec![]
            };
            match &mut op {
                Op::Rnn(a) => {
                    a.use_bias =
                        args.len() == 4 + usize::from(a.masked) + 2 * usize::from(a.dropout)
                }
                Op::RnnGrad { attrs, .. } => {
                    attrs.use_bias =
                        args.len() == 5 + usize::from(attrs.masked) + 2 * usize::from(attrs.dropout)
                }
                _ => {}
            }
            self.expect(":")?;
            self.skip_ws();
            let ty_pos = self.pos;
            let ty = self.ty()?;
            self.check(f, &op, &args, &ty, op_pos, ty_pos)?;
            Node { op, args, ty }
        };
        f.nodes.push(node);
        self.values.insert(name, f.nodes.len() - 1);
        Ok(())
    }
}
