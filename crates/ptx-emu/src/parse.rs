//! PTX text to a syntax tree: declarations, functions, and instructions as opcode + operands.
//! Nothing here knows what an instruction means; `decode` does.

use crate::error::{parse_err, Error};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifiers, directives (`.reg`), opcodes with their modifiers (`ld.global.v4.f32`),
    /// registers (`%r1`, `%tid.x`), labels.
    Ident(String),
    Int(u64),
    /// `0fXXXXXXXX`: the bits of an f32.
    F32(u32),
    /// `0dXXXXXXXXXXXXXXXX`: the bits of an f64.
    F64(u64),
    /// A decimal floating-point literal.
    Float(f64),
    Str,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let bytes = src.as_bytes();
    let (mut i, mut line) = (0usize, 1usize);
    let mut out = Vec::new();
    let is_start = |c: u8| c.is_ascii_alphabetic() || matches!(c, b'_' | b'$' | b'%' | b'.');
    let is_cont = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'$' | b'.');
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            _ if c.is_ascii_whitespace() => i += 1,
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let start = line;
                i += 2;
                loop {
                    match bytes.get(i) {
                        None => return Err(parse_err(start, "unterminated /* comment")),
                        Some(b'*') if bytes.get(i + 1) == Some(&b'/') => {
                            i += 2;
                            break;
                        }
                        Some(b'\n') => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    line += (bytes[i] == b'\n') as usize;
                    i += 1;
                }
                i += 1;
                out.push(Token { tok: Tok::Str, line });
            }
            _ if c.is_ascii_digit() => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    // exponent signs of decimal floats: 1.5e-3
                    if matches!(bytes[i], b'e' | b'E') && matches!(bytes.get(i + 1), Some(b'+' | b'-')) && !src[start..i].starts_with("0x")
                    {
                        i += 1;
                    }
                    i += 1;
                }
                out.push(Token {
                    tok: number(&src[start..i]).ok_or_else(|| parse_err(line, format!("bad number `{}`", &src[start..i])))?,
                    line,
                });
            }
            _ if is_start(c) => {
                let start = i;
                i += 1;
                loop {
                    if i < bytes.len() && is_cont(bytes[i]) {
                        i += 1;
                    } else if bytes.get(i) == Some(&b':') && bytes.get(i + 1) == Some(&b':') {
                        i += 2; // cache hints: L1::no_allocate
                    } else {
                        break;
                    }
                }
                out.push(Token { tok: Tok::Ident(src[start..i].to_string()), line });
            }
            _ => {
                out.push(Token { tok: Tok::Punct(c as char), line });
                i += 1;
            }
        }
    }
    Ok(out)
}

fn number(text: &str) -> Option<Tok> {
    let lower = text.to_ascii_lowercase();
    let digits = lower.strip_suffix('u').unwrap_or(&lower);
    if let Some(hex) = lower.strip_prefix("0f").filter(|h| h.len() == 8) {
        return u32::from_str_radix(hex, 16).ok().map(Tok::F32);
    }
    if let Some(hex) = lower.strip_prefix("0d").filter(|h| h.len() == 16) {
        return u64::from_str_radix(hex, 16).ok().map(Tok::F64);
    }
    if let Some(hex) = digits.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Tok::Int);
    }
    if let Some(bin) = digits.strip_prefix("0b") {
        return u64::from_str_radix(bin, 2).ok().map(Tok::Int);
    }
    if lower.contains(['.', 'e']) {
        return lower.parse::<f64>().ok().map(Tok::Float);
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return u64::from_str_radix(&digits[1..], 8).ok().map(Tok::Int);
    }
    digits.parse::<u64>().ok().map(Tok::Int)
}

/// A state space of a declaration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeclSpace {
    Reg,
    Param,
    Shared,
    Local,
    Global,
    Const,
}

/// `.reg .b32 %r<4>;`, `.param .align 4 .b8 keys[80]`, `.shared .align 16 .b8 stash[];` ...
#[derive(Debug, Clone)]
pub(crate) struct VarDecl {
    pub line: usize,
    pub space: DeclSpace,
    pub align: Option<u64>,
    /// Element type name without the dot (`b8`, `f32`, `pred`).
    pub ty: String,
    /// `.v2` / `.v4` element count (1 when absent).
    pub vector: u64,
    pub names: Vec<DeclName>,
}

#[derive(Debug, Clone)]
pub(crate) struct DeclName {
    pub name: String,
    /// `%r<4>`: declares `%r0` .. `%r3`.
    pub range: Option<u64>,
    /// Array dimensions; `None` for an unsized `[]` (extern shared memory).
    pub dims: Vec<Option<u64>>,
    pub init: Option<Vec<InitValue>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum InitValue {
    Int(u64),
    F32(u32),
    F64(u64),
    Float(f64),
}

#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Name(String),
    Int(u64),
    F32(u32),
    F64(u64),
    Float(f64),
    /// `[base+offset]`, base a register or symbol (or none: an absolute address).
    Addr {
        base: Option<String>,
        offset: i64,
    },
    /// `{a, b, ...}`
    Vector(Vec<Operand>),
    /// `(a, b)` of `call`
    List(Vec<Operand>),
    /// `!p`
    Not(Box<Operand>),
    /// `p|q` (setp, shfl, match destinations)
    Pipe(Box<Operand>, Box<Operand>),
    /// `_`
    Sink,
}

#[derive(Debug, Clone)]
pub(crate) struct InstAst {
    pub line: usize,
    /// `@p` / `@!p`: the predicate and whether it is negated.
    pub guard: Option<(String, bool)>,
    pub opcode: String,
    pub operands: Vec<Operand>,
}

#[derive(Debug, Clone)]
pub(crate) enum Stmt {
    Label(String),
    Decl(VarDecl),
    Inst(InstAst),
    /// `{` / `}` inside a body: a scope for declarations.
    Open,
    Close,
    /// `label: .branchtargets a, b, c;`
    BranchTargets {
        label: String,
        targets: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct FuncAst {
    pub line: usize,
    pub name: String,
    pub is_entry: bool,
    pub params: Vec<VarDecl>,
    pub returns: Vec<VarDecl>,
    /// `None` for a declaration without a body (`.extern .func vprintf(...)`).
    pub body: Option<Vec<Stmt>>,
    pub reqntid: Option<[u64; 3]>,
    pub maxntid: Option<[u64; 3]>,
}

#[derive(Debug, Default)]
pub(crate) struct ModuleAst {
    pub vars: Vec<VarDecl>,
    pub funcs: Vec<FuncAst>,
}

pub(crate) fn parse(src: &str) -> Result<ModuleAst, Error> {
    let tokens = lex(src)?;
    let mut p = Parser { tokens, pos: 0 };
    let mut module = ModuleAst::default();
    while !p.done() {
        let line = p.line();
        let word = p.ident()?;
        match word.as_str() {
            ".version" | ".target" | ".address_size" | ".file" | ".pragma" | ".loc" => p.skip_statement(),
            ".visible" | ".weak" | ".extern" | ".common" => {} // linkage: the next directive follows
            ".section" => p.skip_section()?,
            ".entry" | ".func" => module.funcs.push(p.function(word == ".entry", line)?),
            ".global" | ".const" | ".shared" | ".local" => module.vars.push(p.decl(space_of(&word).unwrap_or(DeclSpace::Global), line)?),
            "@@DWARF" => p.skip_statement(),
            other => return Err(parse_err(line, format!("unsupported module-level directive `{other}`"))),
        }
    }
    Ok(module)
}

fn space_of(word: &str) -> Option<DeclSpace> {
    Some(match word {
        ".reg" => DeclSpace::Reg,
        ".param" => DeclSpace::Param,
        ".shared" => DeclSpace::Shared,
        ".local" => DeclSpace::Local,
        ".global" => DeclSpace::Global,
        ".const" => DeclSpace::Const,
        _ => return None,
    })
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn done(&self) -> bool {
        self.pos >= self.tokens.len()
    }

    fn line(&self) -> usize {
        self.tokens.get(self.pos).or(self.tokens.last()).map_or(1, |t| t.line)
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn next(&mut self) -> Result<Tok, Error> {
        let tok =
            self.tokens.get(self.pos).map(|t| t.tok.clone()).ok_or_else(|| parse_err(self.line(), "unexpected end of the PTX text"))?;
        self.pos += 1;
        Ok(tok)
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.is_punct(c);
        self.pos += found as usize;
        found
    }

    fn expect(&mut self, c: char) -> Result<(), Error> {
        let line = self.line();
        match self.next()? {
            Tok::Punct(found) if found == c => Ok(()),
            other => Err(parse_err(line, format!("expected `{c}`, found {}", describe(&other)))),
        }
    }

    fn ident(&mut self) -> Result<String, Error> {
        let line = self.line();
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            other => Err(parse_err(line, format!("expected a name or directive, found {}", describe(&other)))),
        }
    }

    fn int(&mut self) -> Result<u64, Error> {
        let line = self.line();
        match self.next()? {
            Tok::Int(v) => Ok(v),
            other => Err(parse_err(line, format!("expected an integer, found {}", describe(&other)))),
        }
    }

    fn skip_statement(&mut self) {
        while let Ok(tok) = self.next() {
            if tok == Tok::Punct(';') {
                return;
            }
            // directives without a semicolon end at the next line (`.version 8.4`)
            if self.tokens.get(self.pos).is_some_and(|t| t.line != self.tokens[self.pos - 1].line) {
                if self.is_punct(';') {
                    self.pos += 1;
                }
                return;
            }
        }
    }

    /// `.section .debug_info { ... }`: debug data, skipped.
    fn skip_section(&mut self) -> Result<(), Error> {
        while !self.eat('{') {
            self.next()?;
        }
        let mut depth = 1;
        while depth > 0 {
            match self.next()? {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    /// A declaration after its state-space directive, up to and including `;` (or, for
    /// parameters, up to the `,` / `)` that ends it, which is left unread).
    fn decl(&mut self, space: DeclSpace, line: usize) -> Result<VarDecl, Error> {
        let mut decl = VarDecl { line, space, align: None, ty: String::new(), vector: 1, names: Vec::new() };
        while let Some(Tok::Ident(word)) = self.peek().cloned() {
            if !word.starts_with('.') {
                break;
            }
            self.pos += 1;
            match word.as_str() {
                ".align" => decl.align = Some(self.int()?),
                ".v2" => decl.vector = 2,
                ".v4" => decl.vector = 4,
                ".v8" => decl.vector = 8,
                ".ptr" | ".global" | ".const" | ".shared" | ".local" => {} // pointer attributes of params
                _ if is_type(&word[1..]) => decl.ty = word[1..].to_string(),
                other => return Err(parse_err(self.line(), format!("unsupported declaration attribute `{other}`"))),
            }
        }
        if decl.ty.is_empty() {
            return Err(parse_err(line, "declaration without a type"));
        }
        let in_param_list = space == DeclSpace::Param && matches!(self.peek(), Some(Tok::Ident(_)));
        loop {
            let name = self.ident()?;
            let mut entry = DeclName { name, range: None, dims: Vec::new(), init: None };
            if self.eat('<') {
                entry.range = Some(self.int()?);
                self.expect('>')?;
            }
            while self.eat('[') {
                if self.eat(']') {
                    entry.dims.push(None);
                } else {
                    entry.dims.push(Some(self.int()?));
                    self.expect(']')?;
                }
            }
            if self.eat('=') {
                let mut values = Vec::new();
                self.initialiser(&mut values)?;
                entry.init = Some(values);
            }
            decl.names.push(entry);
            if in_param_list && (self.is_punct(',') || self.is_punct(')')) {
                break;
            }
            if self.eat(';') {
                break;
            }
            self.expect(',')?;
        }
        Ok(decl)
    }

    fn initialiser(&mut self, out: &mut Vec<InitValue>) -> Result<(), Error> {
        if self.eat('{') {
            loop {
                self.initialiser(out)?;
                if self.eat('}') {
                    return Ok(());
                }
                self.expect(',')?;
            }
        }
        let line = self.line();
        let negative = self.eat('-');
        let value = match self.next()? {
            Tok::Int(v) => InitValue::Int(if negative { v.wrapping_neg() } else { v }),
            Tok::F32(b) if !negative => InitValue::F32(b),
            Tok::F64(b) if !negative => InitValue::F64(b),
            Tok::Float(v) => InitValue::Float(if negative { -v } else { v }),
            other => return Err(parse_err(line, format!("unsupported initialiser {}", describe(&other)))),
        };
        out.push(value);
        Ok(())
    }

    fn function(&mut self, is_entry: bool, line: usize) -> Result<FuncAst, Error> {
        let mut returns = Vec::new();
        if !is_entry && self.is_punct('(') {
            returns = self.param_list()?;
        }
        let name = self.ident()?;
        let params = if self.is_punct('(') { self.param_list()? } else { Vec::new() };
        let mut func = FuncAst { line, name, is_entry, params, returns, body: None, reqntid: None, maxntid: None };
        loop {
            let line = self.line();
            match self.next()? {
                Tok::Punct(';') => return Ok(func),
                Tok::Punct('{') => break,
                Tok::Ident(word) => match word.as_str() {
                    ".reqntid" => func.reqntid = Some(self.dims3()?),
                    ".maxntid" => func.maxntid = Some(self.dims3()?),
                    ".minnctapersm" | ".maxnreg" | ".maxnctapersm" | ".maxclusterrank" | ".reqnctapercluster" | ".explicitcluster" => {
                        while matches!(self.peek(), Some(Tok::Int(_) | Tok::Punct(','))) {
                            self.pos += 1;
                        }
                    }
                    ".noreturn" => {}
                    ".pragma" => self.skip_statement(),
                    other => return Err(parse_err(line, format!("unsupported function directive `{other}`"))),
                },
                other => return Err(parse_err(line, format!("expected the function body, found {}", describe(&other)))),
            }
        }
        func.body = Some(self.body()?);
        Ok(func)
    }

    fn dims3(&mut self) -> Result<[u64; 3], Error> {
        let mut dims = [1u64; 3];
        for (i, dim) in dims.iter_mut().enumerate() {
            if i > 0 && !self.eat(',') {
                break;
            }
            *dim = self.int()?;
        }
        Ok(dims)
    }

    fn param_list(&mut self) -> Result<Vec<VarDecl>, Error> {
        self.expect('(')?;
        let mut params = Vec::new();
        if self.eat(')') {
            return Ok(params);
        }
        loop {
            let line = self.line();
            match self.ident()?.as_str() {
                ".param" => params.push(self.decl(DeclSpace::Param, line)?),
                ".reg" => params.push(self.decl(DeclSpace::Reg, line)?),
                other => return Err(parse_err(line, format!("expected `.param`, found `{other}`"))),
            }
            if self.eat(')') {
                return Ok(params);
            }
            self.expect(',')?;
        }
    }

    fn body(&mut self) -> Result<Vec<Stmt>, Error> {
        let mut stmts = Vec::new();
        let mut depth = 1;
        loop {
            let line = self.line();
            match self.peek().cloned() {
                None => return Err(parse_err(line, "unterminated function body")),
                Some(Tok::Punct('{')) => {
                    self.pos += 1;
                    depth += 1;
                    stmts.push(Stmt::Open);
                }
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(stmts);
                    }
                    stmts.push(Stmt::Close);
                }
                Some(Tok::Punct('@')) => stmts.push(Stmt::Inst(self.instruction(line)?)),
                Some(Tok::Ident(word)) => {
                    if self.tokens.get(self.pos + 1).is_some_and(|t| t.tok == Tok::Punct(':')) {
                        self.pos += 2;
                        if self.peek() == Some(&Tok::Ident(".branchtargets".into())) {
                            self.pos += 1;
                            let mut targets = vec![self.ident()?];
                            while self.eat(',') {
                                targets.push(self.ident()?);
                            }
                            self.expect(';')?;
                            stmts.push(Stmt::BranchTargets { label: word, targets });
                        } else {
                            stmts.push(Stmt::Label(word));
                        }
                    } else if let Some(space) = space_of(&word) {
                        self.pos += 1;
                        stmts.push(Stmt::Decl(self.decl(space, line)?));
                    } else if word.starts_with('.') {
                        match word.as_str() {
                            ".loc" | ".pragma" | ".file" | ".maxnreg" | ".reqntid" | ".maxntid" | ".minnctapersm" => self.skip_statement(),
                            other => return Err(parse_err(line, format!("unsupported directive `{other}` in a function body"))),
                        }
                    } else {
                        stmts.push(Stmt::Inst(self.instruction(line)?));
                    }
                }
                Some(other) => return Err(parse_err(line, format!("unexpected {}", describe(&other)))),
            }
        }
    }

    fn instruction(&mut self, line: usize) -> Result<InstAst, Error> {
        let mut guard = None;
        if self.eat('@') {
            let negated = self.eat('!');
            guard = Some((self.ident()?, negated));
        }
        let opcode = self.ident()?;
        let mut operands = Vec::new();
        if !self.eat(';') {
            loop {
                operands.push(self.operand()?);
                if self.eat(';') {
                    break;
                }
                self.expect(',')?;
            }
        }
        Ok(InstAst { line, guard, opcode, operands })
    }

    fn operand(&mut self) -> Result<Operand, Error> {
        let line = self.line();
        let first = match self.next()? {
            Tok::Punct('[') => {
                let mut base = None;
                let mut offset = 0i64;
                if let Some(Tok::Ident(_)) = self.peek() {
                    base = Some(self.ident()?);
                    if self.eat('+') || self.is_punct('-') {
                        offset = self.signed_int()?;
                    }
                } else {
                    offset = self.signed_int()?;
                }
                self.expect(']')?;
                Operand::Addr { base, offset }
            }
            Tok::Punct('{') => Operand::Vector(self.list('}')?),
            Tok::Punct('(') => Operand::List(self.list(')')?),
            Tok::Punct('!') => Operand::Not(Box::new(self.operand()?)),
            Tok::Punct('-') => match self.next()? {
                Tok::Int(v) => Operand::Int(v.wrapping_neg()),
                Tok::Float(v) => Operand::Float(-v),
                Tok::F32(b) => Operand::F32(b ^ 0x8000_0000),
                Tok::F64(b) => Operand::F64(b ^ (1 << 63)),
                other => return Err(parse_err(line, format!("cannot negate {}", describe(&other)))),
            },
            Tok::Ident(name) if name == "_" => Operand::Sink,
            Tok::Ident(name) => Operand::Name(name),
            Tok::Int(v) => Operand::Int(v),
            Tok::F32(b) => Operand::F32(b),
            Tok::F64(b) => Operand::F64(b),
            Tok::Float(v) => Operand::Float(v),
            other => return Err(parse_err(line, format!("unexpected {} in an operand", describe(&other)))),
        };
        if self.eat('|') {
            return Ok(Operand::Pipe(Box::new(first), Box::new(self.operand()?)));
        }
        Ok(first)
    }

    fn signed_int(&mut self) -> Result<i64, Error> {
        let negative = self.eat('-');
        let v = self.int()? as i64;
        Ok(if negative { v.wrapping_neg() } else { v })
    }

    fn list(&mut self, close: char) -> Result<Vec<Operand>, Error> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.operand()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(',')?;
        }
    }
}

pub(crate) fn is_type(name: &str) -> bool {
    matches!(
        name,
        "b8" | "b16"
            | "b32"
            | "b64"
            | "u8"
            | "u16"
            | "u32"
            | "u64"
            | "s8"
            | "s16"
            | "s32"
            | "s64"
            | "f16"
            | "f16x2"
            | "bf16"
            | "bf16x2"
            | "f32"
            | "f64"
            | "pred"
    )
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Int(v) => format!("the number {v}"),
        Tok::F32(_) | Tok::F64(_) | Tok::Float(_) => "a floating-point literal".into(),
        Tok::Str => "a string".into(),
        Tok::Punct(c) => format!("`{c}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_every_notation() {
        assert_eq!(number("0f3F800000"), Some(Tok::F32(0x3F80_0000)));
        assert_eq!(number("0d3FF0000000000000"), Some(Tok::F64(0x3FF0_0000_0000_0000)));
        assert_eq!(number("0x7FFFFF"), Some(Tok::Int(0x7F_FFFF)));
        assert_eq!(number("0x3f80U"), Some(Tok::Int(0x3f80)));
        assert_eq!(number("017"), Some(Tok::Int(15)));
        assert_eq!(number("0b101"), Some(Tok::Int(5)));
        assert_eq!(number("0"), Some(Tok::Int(0)));
        assert_eq!(number("1.5e3"), Some(Tok::Float(1500.0)));
        assert_eq!(number("12abc"), None);
    }

    #[test]
    fn declarations_operands_and_scopes() {
        let src = r#"
            .version 8.4 // comment
            .target sm_80
            .address_size 64
            /* block
               comment */
            .global .align 4 .b8 table[4] = {1, 2, 3, 255};
            .extern .shared .align 16 .b8 stash[];
            .visible .entry k(.param .u64 .ptr .align 1 p, .param .align 4 .b8 keys[80]) .maxntid 128, 1, 1
            {
                .reg .f32 %f<4>;
                .reg .pred %p, %q;
                @!%p ld.global.L1::no_allocate.v2.f32 {%f0, _}, [%rd1+-4];
                setp.lt.and.f32 %p|%q, %f1, 0f3F800000, !%p;
                { .reg .b16 lo; mov.b32 {lo, _}, %r1; }
            L1: ret;
            }
        "#;
        let m = parse(src).unwrap();
        assert_eq!(m.vars.len(), 2);
        assert!(matches!(m.vars[0].names[0].init.as_deref(), Some([InitValue::Int(1), _, _, InitValue::Int(255)])));
        assert_eq!(m.vars[1].names[0].dims, vec![None]);
        let f = &m.funcs[0];
        assert_eq!((f.params.len(), f.maxntid), (2, Some([128, 1, 1])));
        assert_eq!(f.params[1].names[0].dims, vec![Some(80)]);
        let body = f.body.as_ref().unwrap();
        let Stmt::Inst(ld) = &body[2] else { panic!("{:?}", body[2]) };
        assert_eq!((ld.opcode.as_str(), ld.guard.clone()), ("ld.global.L1::no_allocate.v2.f32", Some(("%p".into(), true))));
        assert!(matches!(&ld.operands[1], Operand::Addr { base: Some(b), offset: -4 } if b == "%rd1"));
        assert!(matches!(&ld.operands[0], Operand::Vector(v) if matches!(v[1], Operand::Sink)));
        let Stmt::Inst(setp) = &body[3] else { panic!() };
        assert!(matches!(&setp.operands[0], Operand::Pipe(..)) && matches!(&setp.operands[3], Operand::Not(_)));
        assert!(matches!(body[4], Stmt::Open) && matches!(body[7], Stmt::Close) && matches!(&body[8], Stmt::Label(l) if l == "L1"));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse(".version 8.4\n.target sm_80\n.bogus 3;\n").unwrap_err();
        assert_eq!(err, Error::Parse { line: 3, message: "unsupported module-level directive `.bogus`".into() });
    }
}
