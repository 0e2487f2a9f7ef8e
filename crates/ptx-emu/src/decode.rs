//! Syntax tree to runnable code: names resolved to register slots and addresses, immediates to
//! constant slots, labels to instruction indices, every opcode and modifier checked once.

use std::collections::HashMap;

use crate::error::{parse_err, Error};
use crate::inst::*;
use crate::memory::{module_globals_base, CONST_WINDOW, SHARED_WINDOW};
use crate::parse::{DeclName, DeclSpace, FuncAst, InitValue, InstAst, ModuleAst, Operand, Stmt, VarDecl};

/// A decoded module.
#[derive(Debug)]
pub(crate) struct Program {
    pub funcs: Vec<Function>,
    /// Bytes of static `.shared` variables (all functions' together); dynamic shared memory
    /// (`extern .shared`) starts at `dynamic_shared_base`.
    pub static_shared: u32,
    pub dynamic_shared_base: u32,
    pub const_bank: Vec<u8>,
    /// Initial bytes of the module's `.global` variables (at `module_globals_base(id)`).
    pub globals_image: Vec<u8>,
}

/// One `.entry` or `.func`.
#[derive(Debug)]
pub(crate) struct Function {
    pub name: String,
    pub is_entry: bool,
    pub code: Vec<Inst>,
    /// Per instruction: its PTX line and opcode (for errors).
    pub lines: Vec<u32>,
    pub opcodes: Vec<Box<str>>,
    /// The register file a frame starts with: constants filled in, the rest 0.
    pub template: Vec<u64>,
    /// Entry: the kernel parameters; `.func`: its parameters in its frame's param space.
    pub params: Vec<ParamSlot>,
    /// Entry: bytes of the kernel parameter buffer.
    pub kernel_param_bytes: u32,
    pub frame_param_bytes: u32,
    pub local_bytes: u32,
    pub tables: Vec<Vec<u32>>,
    pub calls: Vec<CallSite>,
    pub reqntid: Option<[u64; 3]>,
    pub maxntid: Option<[u64; 3]>,
}

#[derive(Debug, Clone)]
pub(crate) struct ParamSlot {
    pub name: String,
    pub offset: u32,
    pub bytes: u32,
    pub align: u32,
}

/// A `call`: which bytes of the caller's param space become the callee's parameters, and which
/// of the callee's return bytes come back.
#[derive(Debug, Clone)]
pub(crate) struct CallSite {
    pub callee: u32,
    /// `(caller offset, callee offset, bytes)`
    pub args: Vec<(u32, u32, u32)>,
    /// `(callee offset, caller offset, bytes)`
    pub rets: Vec<(u32, u32, u32)>,
}

/// What a name means inside a function.
#[derive(Debug, Clone, Copy)]
enum Binding {
    Reg(Slot),
    /// Offset in the frame's local memory.
    Local(u32),
    FrameParam {
        offset: u32,
        bytes: u32,
    },
    KernelParam {
        offset: u32,
    },
    Shared(u32),
    Global(u64),
    Const(u32),
}

/// A type modifier: kind and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ty {
    kind: Kind,
    bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bits,
    Unsigned,
    Signed,
    Float(Fmt),
    /// f16x2 / bf16x2
    Pair(Fmt),
    Pred,
}

fn parse_ty(name: &str) -> Option<Ty> {
    let (kind, bits) = match name {
        "pred" => (Kind::Pred, 1),
        "f16" => (Kind::Float(Fmt::F16), 16),
        "bf16" => (Kind::Float(Fmt::BF16), 16),
        "f32" => (Kind::Float(Fmt::F32), 32),
        "f64" => (Kind::Float(Fmt::F64), 64),
        "f16x2" => (Kind::Pair(Fmt::F16), 32),
        "bf16x2" => (Kind::Pair(Fmt::BF16), 32),
        _ => {
            let kind = match name.as_bytes().first()? {
                b'b' => Kind::Bits,
                b'u' => Kind::Unsigned,
                b's' => Kind::Signed,
                _ => return None,
            };
            let bits: u8 = name[1..].parse().ok()?;
            // 128-bit values (`.b128`) are not supported anywhere
            if !matches!(bits, 8 | 16 | 32 | 64) {
                return None;
            }
            (kind, bits)
        }
    };
    Some(Ty { kind, bits })
}

impl Ty {
    fn signed(self) -> bool {
        self.kind == Kind::Signed
    }
    fn is_int(self) -> bool {
        matches!(self.kind, Kind::Bits | Kind::Unsigned | Kind::Signed)
    }
    fn float(self) -> Option<(Fmt, bool)> {
        match self.kind {
            Kind::Float(f) => Some((f, false)),
            Kind::Pair(f) => Some((f, true)),
            _ => None,
        }
    }
    fn bytes(self) -> u32 {
        (u32::from(self.bits) / 8).max(1)
    }
}

/// Modifiers of one opcode; each decoder takes the ones it understands and `finish` rejects
/// the rest, so an unsupported variant is a parse error rather than a silently wrong result.
struct Mods<'a> {
    opcode: &'a str,
    line: usize,
    parts: Vec<&'a str>,
    used: Vec<bool>,
}

/// Modifiers with no effect on a sequential emulator: caching, memory ordering, scopes,
/// uniformity and warp-convergence hints.
const IGNORED: &[&str] = &[
    "nc", "ca", "cg", "cs", "lu", "cv", "wb", "wt", "weak", "volatile", "relaxed", "acquire", "release", "acq_rel", "sc", "cta", "gpu",
    "sys", "cluster", "uni", "aligned", "noftz",
];

impl<'a> Mods<'a> {
    fn new(opcode: &'a str, line: usize) -> (&'a str, Mods<'a>) {
        let mut split = opcode.split('.');
        let mnemonic = split.next().unwrap_or("");
        let parts: Vec<&str> = split.collect();
        let used = parts.iter().map(|p| p.contains("::") || IGNORED.contains(p)).collect();
        (mnemonic, Mods { opcode, line, parts, used })
    }

    fn take(&mut self, m: &str) -> bool {
        match self.parts.iter().position(|p| *p == m) {
            Some(i) => {
                self.used[i] = true;
                true
            }
            None => false,
        }
    }

    /// The value paired with whichever of `options` is present.
    fn pick<T: Copy>(&mut self, options: &[(&str, T)]) -> Option<T> {
        options.iter().find(|(m, _)| self.take(m)).map(|(_, v)| *v)
    }

    fn take_any(&mut self, options: &[&'a str]) -> Option<&'a str> {
        options.iter().copied().find(|m| self.take(m))
    }

    /// All type modifiers, in order.
    fn types(&mut self) -> Vec<Ty> {
        let mut out = Vec::new();
        for (i, p) in self.parts.iter().enumerate() {
            if let Some(ty) = parse_ty(p) {
                self.used[i] = true;
                out.push(ty);
            }
        }
        out
    }

    fn one_type(&mut self) -> Result<Ty, Error> {
        match self.types().as_slice() {
            [ty] => Ok(*ty),
            _ => Err(self.err("expected exactly one type modifier")),
        }
    }

    fn rounding(&mut self) -> Option<Rnd> {
        self.pick(&[("rn", Rnd::Nearest), ("rz", Rnd::Zero), ("rm", Rnd::Down), ("rp", Rnd::Up)])
    }

    fn int_rounding(&mut self) -> Option<Rnd> {
        self.pick(&[("rni", Rnd::Nearest), ("rzi", Rnd::Zero), ("rmi", Rnd::Down), ("rpi", Rnd::Up)])
    }

    fn space(&mut self) -> Option<Space> {
        self.pick(&[
            ("global", Space::Global),
            ("shared", Space::Shared),
            ("local", Space::Local),
            ("const", Space::Const),
            ("param", Space::KernelParam),
        ])
    }

    fn err(&self, what: &str) -> Error {
        parse_err(self.line, format!("`{}`: {what}", self.opcode))
    }

    fn finish(self) -> Result<(), Error> {
        match self.parts.iter().zip(&self.used).find(|(_, used)| !**used) {
            Some((part, _)) => Err(parse_err(self.line, format!("unsupported modifier `.{part}` in `{}`", self.opcode))),
            None => Ok(()),
        }
    }
}

/// Module-wide facts every function's decoding needs.
struct ModuleCtx {
    symbols: HashMap<String, Binding>,
    funcs: HashMap<String, u32>,
    signatures: Vec<(Vec<ParamSlot>, Vec<ParamSlot>, bool)>,
}

pub(crate) fn decode(ast: &ModuleAst, module_id: u64) -> Result<Program, Error> {
    let mut symbols = HashMap::new();
    let mut const_bank = Vec::new();
    let mut globals_image = Vec::new();
    let mut shared = 0u32;
    let mut dynamic_align = 16u32;
    let mut externs = Vec::new();
    let mut shared_decl = |decl: &VarDecl, name: &DeclName, symbols: &mut HashMap<String, Binding>| -> Result<(), Error> {
        let (bytes, align) = var_size(decl, name)?;
        if name.dims.first() == Some(&None) {
            dynamic_align = dynamic_align.max(align);
            externs.push(name.name.clone());
        } else {
            shared = shared.next_multiple_of(align);
            symbols.insert(name.name.clone(), Binding::Shared(shared));
            shared = shared.checked_add(bytes).ok_or_else(|| parse_err(decl.line, "shared memory too large"))?;
        }
        Ok(())
    };
    for decl in &ast.vars {
        for name in &decl.names {
            match decl.space {
                DeclSpace::Shared => shared_decl(decl, name, &mut symbols)?,
                DeclSpace::Global | DeclSpace::Const => {
                    let image = if decl.space == DeclSpace::Global { &mut globals_image } else { &mut const_bank };
                    let (bytes, align) = var_size(decl, name)?;
                    let offset = image.len().next_multiple_of(align as usize);
                    image.resize(offset, 0);
                    image.extend(initial_bytes(decl, name, bytes)?);
                    let binding = if decl.space == DeclSpace::Global {
                        Binding::Global(module_globals_base(module_id) + offset as u64)
                    } else {
                        Binding::Const(offset as u32)
                    };
                    symbols.insert(name.name.clone(), binding);
                }
                _ => return Err(parse_err(decl.line, "only .global, .const and .shared variables may be declared at module scope")),
            }
        }
    }
    // Function-scope .shared variables are static shared memory too (named per function).
    let mut function_shared: Vec<HashMap<String, Binding>> = Vec::new();
    for func in &ast.funcs {
        let mut own = HashMap::new();
        for stmt in func.body.iter().flatten() {
            if let Stmt::Decl(decl) = stmt {
                if decl.space == DeclSpace::Shared {
                    for name in &decl.names {
                        shared_decl(decl, name, &mut own)?;
                    }
                }
            }
        }
        function_shared.push(own);
    }
    let dynamic_shared_base = shared.next_multiple_of(dynamic_align);
    for name in externs {
        symbols.insert(name, Binding::Shared(dynamic_shared_base));
    }

    let mut ctx = ModuleCtx { symbols, funcs: HashMap::new(), signatures: Vec::new() };
    for func in &ast.funcs {
        let (params, returns, _) = signature(func)?;
        // a declaration and a later definition of one .func share its index
        match ctx.funcs.get(&func.name) {
            Some(&existing) if func.body.is_some() => ctx.signatures[existing as usize] = (params, returns, true),
            Some(_) => {}
            None => {
                ctx.funcs.insert(func.name.clone(), ctx.signatures.len() as u32);
                ctx.signatures.push((params, returns, func.body.is_some()));
            }
        }
    }
    let mut funcs: Vec<Option<Function>> = (0..ctx.signatures.len()).map(|_| None).collect();
    for (func, own_shared) in ast.funcs.iter().zip(function_shared) {
        let index = ctx.funcs[&func.name] as usize;
        if func.body.is_none() && funcs[index].is_some() {
            continue;
        }
        funcs[index] = Some(FnDecoder::new(&ctx, func, own_shared).decode(func)?);
    }
    Ok(Program {
        funcs: funcs.into_iter().map(|f| f.expect("every signature has a function")).collect(),
        static_shared: shared,
        dynamic_shared_base,
        const_bank,
        globals_image,
    })
}

/// Bytes and alignment of a variable (array dimensions multiplied out; `[]` counts as 0).
fn var_size(decl: &VarDecl, name: &DeclName) -> Result<(u32, u32), Error> {
    let ty = parse_ty(&decl.ty).ok_or_else(|| parse_err(decl.line, format!("unsupported type .{}", decl.ty)))?;
    let too_large = || parse_err(decl.line, format!("`{}` is too large", name.name));
    let element = u64::from(ty.bytes()) * decl.vector;
    let count = name.dims.iter().try_fold(1u64, |n, d| n.checked_mul(d.unwrap_or(0))).ok_or_else(too_large)?;
    let bytes = element.checked_mul(count).and_then(|b| u32::try_from(b).ok()).ok_or_else(too_large)?;
    let align = decl.align.unwrap_or(element).max(1);
    if !align.is_power_of_two() {
        return Err(parse_err(decl.line, format!("alignment {align} is not a power of two")));
    }
    Ok((bytes, align as u32))
}

fn initial_bytes(decl: &VarDecl, name: &DeclName, bytes: u32) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(bytes as usize);
    let ty = parse_ty(&decl.ty).ok_or_else(|| parse_err(decl.line, "bad type"))?;
    for value in name.init.iter().flatten() {
        let bits = match ty.float() {
            Some((fmt, _)) => float_bits(init_as_f64(*value), fmt),
            None => match *value {
                InitValue::Int(v) => v,
                InitValue::Float(v) => v as i64 as u64,
                InitValue::F32(b) => u64::from(b),
                InitValue::F64(b) => b,
            },
        };
        out.extend_from_slice(&bits.to_le_bytes()[..ty.bytes() as usize]);
    }
    if out.len() > bytes as usize {
        return Err(parse_err(decl.line, format!("the initialiser of `{}` has more values than the variable", name.name)));
    }
    out.resize(bytes as usize, 0);
    Ok(out)
}

fn init_as_f64(value: InitValue) -> f64 {
    match value {
        InitValue::Int(v) => v as i64 as f64,
        InitValue::Float(v) => v,
        InitValue::F32(b) => f64::from(f32::from_bits(b)),
        InitValue::F64(b) => f64::from_bits(b),
    }
}

/// Bits of `value` in `fmt`, rounded to nearest.
fn float_bits(value: f64, fmt: Fmt) -> u64 {
    match fmt {
        Fmt::F64 => value.to_bits(),
        _ => crate::float::round_f64(value, std::cmp::Ordering::Equal, Rnd::Nearest, fmt),
    }
}

/// Parameter layouts of a function: `(params, returns, kernel param bytes)`.
fn signature(func: &FuncAst) -> Result<(Vec<ParamSlot>, Vec<ParamSlot>, u32), Error> {
    let mut offset = 0u32;
    let mut layout = |decls: &[VarDecl]| -> Result<Vec<ParamSlot>, Error> {
        let mut out = Vec::new();
        for decl in decls {
            if decl.space != DeclSpace::Param {
                return Err(parse_err(decl.line, "register parameters (`.reg` in a parameter list) are not supported"));
            }
            for name in &decl.names {
                let (bytes, align) = var_size(decl, name)?;
                let bytes = if name.dims.is_empty() { bytes.max(parse_ty(&decl.ty).map_or(0, Ty::bytes)) } else { bytes };
                offset = offset.next_multiple_of(align);
                out.push(ParamSlot { name: name.name.clone(), offset, bytes, align });
                offset += bytes;
            }
        }
        Ok(out)
    };
    // a .func's frame holds its return values first, then its parameters
    let returns = layout(&func.returns)?;
    let params = layout(&func.params)?;
    Ok((params, returns, offset))
}

/// More registers than any function declares (ptxas allows 255 per thread after allocation).
const MAX_REGISTER_RANGE: u64 = 1 << 20;

/// The registers a `.reg` name declares: `%r<4>` is `%r0` .. `%r3`.
fn register_names(name: &DeclName, line: usize) -> Result<Vec<String>, Error> {
    match name.range {
        Some(n) if n > MAX_REGISTER_RANGE => Err(parse_err(line, format!("`{}<{n}>` declares too many registers", name.name))),
        Some(n) => Ok((0..n).map(|i| format!("{}{i}", name.name)).collect()),
        None => Ok(vec![name.name.clone()]),
    }
}

struct FnDecoder<'m> {
    ctx: &'m ModuleCtx,
    name: String,
    is_entry: bool,
    scopes: Vec<HashMap<String, Binding>>,
    labels: HashMap<String, u32>,
    table_labels: HashMap<String, u32>,
    tables: Vec<Vec<u32>>,
    consts: HashMap<u64, Slot>,
    template: Vec<u64>,
    frame_param_bytes: u32,
    local_bytes: u32,
    calls: Vec<CallSite>,
    line: usize,
}

impl<'m> FnDecoder<'m> {
    fn new(ctx: &'m ModuleCtx, func: &FuncAst, own_shared: HashMap<String, Binding>) -> Self {
        let mut template = vec![0u64; FIRST_REGISTER as usize];
        template[ONE as usize] = 1;
        let mut decoder = FnDecoder {
            ctx,
            name: func.name.clone(),
            is_entry: func.is_entry,
            scopes: vec![own_shared],
            labels: HashMap::new(),
            table_labels: HashMap::new(),
            tables: Vec::new(),
            consts: HashMap::new(),
            template,
            frame_param_bytes: 0,
            local_bytes: 0,
            calls: Vec::new(),
            line: func.line,
        };
        decoder.consts.insert(1, ONE);
        decoder.consts.insert(0, ZERO);
        decoder
    }

    fn decode(mut self, func: &FuncAst) -> Result<Function, Error> {
        let index = self.ctx.funcs[&func.name] as usize;
        let (params, returns, _) = self.ctx.signatures[index].clone();
        let (_, _, param_bytes) = signature(func)?;
        let mut outer = HashMap::new();
        for p in params.iter().chain(&returns) {
            let binding = if func.is_entry {
                Binding::KernelParam { offset: p.offset }
            } else {
                Binding::FrameParam { offset: p.offset, bytes: p.bytes }
            };
            outer.insert(p.name.clone(), binding);
        }
        if !func.is_entry {
            self.frame_param_bytes = param_bytes;
        }
        self.scopes.push(outer);
        let body = func.body.as_deref().unwrap_or(&[]);

        // Labels first: branches may jump forward.
        let mut pc = 0u32;
        for stmt in body {
            match stmt {
                Stmt::Label(label) => {
                    self.labels.insert(label.clone(), pc);
                }
                Stmt::Inst(_) => pc += 1,
                _ => {}
            }
        }
        for stmt in body {
            if let Stmt::BranchTargets { label, targets } = stmt {
                let resolved = targets.iter().map(|t| self.label(t)).collect::<Result<Vec<_>, _>>()?;
                self.table_labels.insert(label.clone(), self.tables.len() as u32);
                self.tables.push(resolved);
            }
        }

        let (mut code, mut lines, mut opcodes) = (Vec::new(), Vec::new(), Vec::new());
        for stmt in body {
            match stmt {
                Stmt::Open => self.scopes.push(HashMap::new()),
                Stmt::Close => {
                    self.scopes.pop();
                }
                Stmt::Decl(decl) => self.declare(decl)?,
                Stmt::Inst(inst) => {
                    self.line = inst.line;
                    let op = self.instruction(inst)?;
                    let (guard, want) = match &inst.guard {
                        None => (ONE, true),
                        Some((name, negated)) => (self.reg(name)?, !negated),
                    };
                    code.push(Inst { op, guard, want });
                    lines.push(inst.line as u32);
                    opcodes.push(inst.opcode.clone().into_boxed_str());
                }
                Stmt::Label(_) | Stmt::BranchTargets { .. } => {}
            }
        }
        // Falling off the end returns.
        code.push(Inst { op: Op::Ret, guard: ONE, want: true });
        lines.push(lines.last().copied().unwrap_or(func.line as u32));
        opcodes.push("ret (end of function)".into());

        Ok(Function {
            name: self.name,
            is_entry: func.is_entry,
            code,
            lines,
            opcodes,
            template: self.template,
            params,
            kernel_param_bytes: if func.is_entry { param_bytes } else { 0 },
            frame_param_bytes: self.frame_param_bytes,
            local_bytes: self.local_bytes,
            tables: self.tables,
            calls: self.calls,
            reqntid: func.reqntid,
            maxntid: func.maxntid,
        })
    }

    fn err(&self, message: impl Into<String>) -> Error {
        parse_err(self.line, message)
    }

    fn declare(&mut self, decl: &VarDecl) -> Result<(), Error> {
        self.line = decl.line;
        for name in &decl.names {
            match decl.space {
                DeclSpace::Reg => {
                    if decl.vector != 1 {
                        return Err(self.err("vector registers (`.reg .v4`) are not supported"));
                    }
                    for reg in register_names(name, decl.line)? {
                        let slot = self.new_slot(0);
                        self.bind(reg, Binding::Reg(slot));
                    }
                }
                DeclSpace::Local => {
                    let (bytes, align) = var_size(decl, name)?;
                    let offset = self.local_bytes.next_multiple_of(align);
                    self.local_bytes = offset + bytes;
                    self.bind(name.name.clone(), Binding::Local(offset));
                }
                DeclSpace::Param => {
                    let (bytes, align) = var_size(decl, name)?;
                    let bytes = if name.dims.is_empty() { bytes.max(parse_ty(&decl.ty).map_or(0, Ty::bytes)) } else { bytes };
                    let offset = self.frame_param_bytes.next_multiple_of(align);
                    self.frame_param_bytes = offset + bytes;
                    self.bind(name.name.clone(), Binding::FrameParam { offset, bytes });
                }
                DeclSpace::Shared => {} // laid out with the module's static shared memory
                DeclSpace::Global | DeclSpace::Const => {
                    return Err(self.err("`.global` / `.const` variables inside functions are not supported"))
                }
            }
        }
        Ok(())
    }

    fn bind(&mut self, name: String, binding: Binding) {
        self.scopes.last_mut().expect("a scope is open").insert(name, binding);
    }

    fn new_slot(&mut self, value: u64) -> Slot {
        self.template.push(value);
        (self.template.len() - 1) as Slot
    }

    fn konst(&mut self, value: u64) -> Slot {
        if let Some(&slot) = self.consts.get(&value) {
            return slot;
        }
        let slot = self.new_slot(value);
        self.consts.insert(value, slot);
        slot
    }

    fn lookup(&self, name: &str) -> Option<Binding> {
        self.scopes.iter().rev().find_map(|s| s.get(name)).or_else(|| self.ctx.symbols.get(name)).copied()
    }

    fn label(&self, name: &str) -> Result<u32, Error> {
        self.labels.get(name).copied().ok_or_else(|| self.err(format!("unknown label `{name}`")))
    }

    fn reg(&self, name: &str) -> Result<Slot, Error> {
        if let Some(slot) = special(name) {
            return Ok(slot);
        }
        match self.lookup(name) {
            Some(Binding::Reg(slot)) => Ok(slot),
            Some(_) => Err(self.err(format!("`{name}` is not a register"))),
            None if matches!(name, "%clock" | "%clock64" | "%globaltimer") => Err(self.err(format!("`{name}` can only be read by mov"))),
            None if name.starts_with('%') => Err(self.err(format!("unknown or unsupported register `{name}`"))),
            None => Err(self.err(format!("unknown name `{name}`"))),
        }
    }

    fn dst(&self, op: &Operand) -> Result<Slot, Error> {
        match op {
            Operand::Name(name) => self.reg(name),
            Operand::Sink => Ok(SINK),
            _ => Err(self.err("expected a register as destination")),
        }
    }

    /// A source operand read as `ty`: a register, an immediate, or a variable's address.
    fn src(&mut self, op: &Operand, ty: Ty) -> Result<Slot, Error> {
        let value = match op {
            Operand::Name(name) => {
                return match self.lookup(name) {
                    Some(Binding::Reg(slot)) => Ok(slot),
                    Some(Binding::Local(offset)) => {
                        Err(self.err(format!("the address of local `{name}` (offset {offset}) must be taken with mov")))
                    }
                    Some(binding) if special(name).is_none() => {
                        let addr = self.address_of(name, binding)?;
                        Ok(self.konst(addr))
                    }
                    _ => self.reg(name),
                };
            }
            Operand::Int(v) => match ty.float() {
                Some((fmt, _)) => float_bits(*v as i64 as f64, fmt),
                None => *v,
            },
            Operand::F32(b) => match ty.float() {
                Some((fmt, _)) if fmt != Fmt::F32 => float_bits(f64::from(f32::from_bits(*b)), fmt),
                _ => u64::from(*b),
            },
            Operand::F64(b) => match ty.float() {
                Some((fmt, _)) if fmt != Fmt::F64 => float_bits(f64::from_bits(*b), fmt),
                _ => *b,
            },
            Operand::Float(v) => match ty.float() {
                Some((fmt, _)) => float_bits(*v, fmt),
                None => *v as i64 as u64,
            },
            _ => return Err(self.err("expected a register or an immediate")),
        };
        Ok(self.konst(value))
    }

    /// `(slot, negated)` of a predicate source `p` or `!p`.
    fn pred(&mut self, op: &Operand) -> Result<(Slot, bool), Error> {
        match op {
            Operand::Not(inner) => Ok((self.pred(inner)?.0, true)),
            Operand::Int(v) => Ok((self.konst(u64::from(*v != 0)), false)),
            other => Ok((self.dst(other)?, false)),
        }
    }

    /// The address a variable name stands for in its own space.
    fn address_of(&self, name: &str, binding: Binding) -> Result<u64, Error> {
        Ok(match binding {
            Binding::Shared(a) | Binding::Const(a) => u64::from(a),
            Binding::Global(a) => a,
            Binding::KernelParam { offset } => u64::from(offset),
            Binding::FrameParam { .. } => {
                return Err(self.err(format!("taking the address of the .func parameter `{name}` is not supported")))
            }
            Binding::Local(_) | Binding::Reg(_) => return Err(self.err(format!("`{name}` has no constant address"))),
        })
    }

    /// `[base+offset]` for an access in `space`; returns the space actually addressed
    /// (`.param` resolves to the kernel's or the frame's) with base slot and offset.
    fn address(&mut self, op: &Operand, space: Space) -> Result<(Space, Slot, i32), Error> {
        let Operand::Addr { base, offset } = op else {
            return Err(self.err("expected an address `[...]`"));
        };
        let offset32 = |o: i64| i32::try_from(o).map_err(|_| self.err("address offset out of range"));
        let Some(name) = base else {
            let slot = self.konst(*offset as u64);
            return Ok((self.param_space(space), slot, 0));
        };
        match self.lookup(name) {
            Some(Binding::Reg(slot)) => Ok((self.param_space(space), slot, offset32(*offset)?)),
            None if special(name).is_some() => Ok((self.param_space(space), self.reg(name)?, offset32(*offset)?)),
            Some(Binding::Local(local)) if space == Space::Local => Ok((Space::Local, FRAME_LOCAL, offset32(i64::from(local) + offset)?)),
            Some(Binding::FrameParam { offset: at, .. }) if space == Space::KernelParam => {
                Ok((Space::FrameParam, ZERO, offset32(i64::from(at) + offset)?))
            }
            Some(binding @ Binding::KernelParam { .. }) if space == Space::KernelParam => {
                Ok((Space::KernelParam, ZERO, offset32(self.address_of(name, binding)? as i64 + offset)?))
            }
            Some(binding) => {
                let own = match binding {
                    Binding::Shared(_) => Space::Shared,
                    Binding::Global(_) => Space::Global,
                    Binding::Const(_) => Space::Const,
                    _ => return Err(self.err(format!("`{name}` cannot be addressed in the {} space", space.name()))),
                };
                let mut addr = self.address_of(name, binding)?;
                if space == Space::Generic {
                    addr += match own {
                        Space::Shared => SHARED_WINDOW,
                        Space::Const => CONST_WINDOW,
                        _ => 0,
                    };
                } else if space != own {
                    return Err(self.err(format!("`{name}` is a {} variable, accessed as {}", own.name(), space.name())));
                }
                let slot = self.konst(addr.wrapping_add(*offset as u64));
                Ok((space, slot, 0))
            }
            None => Err(self.err(format!("unknown name `{name}` in an address"))),
        }
    }

    /// A `.param` access through a register: the kernel's parameters in an entry, the frame's in
    /// a `.func`.
    fn param_space(&self, space: Space) -> Space {
        if space == Space::KernelParam && !self.is_entry {
            Space::FrameParam
        } else {
            space
        }
    }

    fn operands<'a>(&self, inst: &'a InstAst, n: std::ops::RangeInclusive<usize>) -> Result<&'a [Operand], Error> {
        if n.contains(&inst.operands.len()) {
            Ok(&inst.operands)
        } else {
            Err(self.err(format!("`{}` takes {} operands, found {}", inst.opcode, describe_range(&n), inst.operands.len())))
        }
    }

    fn instruction(&mut self, inst: &InstAst) -> Result<Op, Error> {
        let (mnemonic, mut m) = Mods::new(&inst.opcode, inst.line);
        let op = match mnemonic {
            "mov" => self.mov(inst, &mut m)?,
            "ld" | "ldu" => self.load(inst, &mut m)?,
            "st" => self.store(inst, &mut m)?,
            "atom" | "red" => self.atom(inst, &mut m, mnemonic == "red")?,
            "cvta" => {
                let o = self.operands(inst, 2..=2)?;
                let to = m.take("to");
                let space = m.space().filter(|s| *s != Space::KernelParam || self.is_entry).ok_or_else(|| m.err("needs a state space"))?;
                let ty = m.one_type()?;
                Op::Cvta { to, space, d: self.dst(&o[0])?, a: self.src(&o[1], ty)? }
            }
            "isspacep" => {
                let o = self.operands(inst, 2..=2)?;
                let space = m.space().ok_or_else(|| m.err("needs a state space"))?;
                Op::Isspacep { space, d: self.dst(&o[0])?, a: self.src(&o[1], Ty { kind: Kind::Unsigned, bits: 64 })? }
            }
            "add" | "sub" | "mul" | "mad" | "fma" | "div" | "rem" | "min" | "max" | "addc" | "subc" | "madc" => {
                self.arith(inst, mnemonic, &mut m)?
            }
            "abs" | "neg" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" => self.unary(inst, mnemonic, &mut m)?,
            "and" | "or" | "xor" | "shl" | "shr" => {
                let o = self.operands(inst, 3..=3)?;
                let ty = m.one_type()?;
                let op = match mnemonic {
                    "and" => IntOp::And,
                    "or" => IntOp::Or,
                    "xor" => IntOp::Xor,
                    "shl" => IntOp::Shl,
                    _ => IntOp::Shr,
                };
                let shift_ty = Ty { kind: Kind::Unsigned, bits: 32 };
                let b_ty = if matches!(op, IntOp::Shl | IntOp::Shr) { shift_ty } else { ty };
                Op::Int { op, bits: ty.bits, signed: ty.signed(), d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, b: self.src(&o[2], b_ty)? }
            }
            "shf" => {
                let o = self.operands(inst, 4..=4)?;
                let left = m.take("l") || !m.take("r");
                let clamp = m.take("clamp") || !m.take("wrap");
                let ty = m.one_type()?;
                Op::Shf { left, clamp, d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, b: self.src(&o[2], ty)?, c: self.src(&o[3], ty)? }
            }
            "lop3" => {
                let o = self.operands(inst, 5..=5)?;
                let ty = m.one_type()?;
                let Operand::Int(lut) = o[4] else { return Err(m.err("the lookup table must be an immediate")) };
                Op::Lop3 { d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, b: self.src(&o[2], ty)?, c: self.src(&o[3], ty)?, lut: lut as u8 }
            }
            "prmt" => {
                let o = self.operands(inst, 4..=4)?;
                let mode = m
                    .pick(&[
                        ("f4e", PrmtMode::F4e),
                        ("b4e", PrmtMode::B4e),
                        ("rc8", PrmtMode::Rc8),
                        ("ecl", PrmtMode::Ecl),
                        ("ecr", PrmtMode::Ecr),
                        ("rc16", PrmtMode::Rc16),
                    ])
                    .unwrap_or(PrmtMode::Default);
                let ty = m.one_type()?;
                Op::Prmt { mode, d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, b: self.src(&o[2], ty)?, c: self.src(&o[3], ty)? }
            }
            "bfe" => {
                let o = self.operands(inst, 4..=4)?;
                let ty = m.one_type()?;
                let u32t = Ty { kind: Kind::Unsigned, bits: 32 };
                Op::Bfe {
                    bits: ty.bits,
                    signed: ty.signed(),
                    d: self.dst(&o[0])?,
                    a: self.src(&o[1], ty)?,
                    pos: self.src(&o[2], u32t)?,
                    len: self.src(&o[3], u32t)?,
                }
            }
            "bfi" => {
                let o = self.operands(inst, 5..=5)?;
                let ty = m.one_type()?;
                let u32t = Ty { kind: Kind::Unsigned, bits: 32 };
                Op::Bfi {
                    bits: ty.bits,
                    d: self.dst(&o[0])?,
                    f: self.src(&o[1], ty)?,
                    b: self.src(&o[2], ty)?,
                    pos: self.src(&o[3], u32t)?,
                    len: self.src(&o[4], u32t)?,
                }
            }
            "setp" => self.setp(inst, &mut m)?,
            "selp" => {
                let o = self.operands(inst, 4..=4)?;
                let ty = m.one_type()?;
                let (c, negated) = self.pred(&o[3])?;
                if negated {
                    return Err(m.err("selp's predicate cannot be negated"));
                }
                Op::Selp { d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, b: self.src(&o[2], ty)?, c }
            }
            "slct" => {
                let o = self.operands(inst, 4..=4)?;
                let ftz = m.take("ftz");
                let types = m.types();
                let [dty, cty] = types[..] else { return Err(m.err("expects two types")) };
                let float = cty.kind == Kind::Float(Fmt::F32);
                Op::Slct { float, ftz, d: self.dst(&o[0])?, a: self.src(&o[1], dty)?, b: self.src(&o[2], dty)?, c: self.src(&o[3], cty)? }
            }
            "sqrt" | "rcp" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => self.transcendental(inst, mnemonic, &mut m)?,
            "copysign" => {
                let o = self.operands(inst, 3..=3)?;
                let ty = m.one_type()?;
                let (fmt, _) = ty.float().ok_or_else(|| m.err("needs a float type"))?;
                Op::Copysign { fmt, d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, b: self.src(&o[2], ty)? }
            }
            "testp" => {
                let o = self.operands(inst, 2..=2)?;
                let op = m
                    .pick(&[
                        ("finite", TestpOp::Finite),
                        ("infinite", TestpOp::Infinite),
                        ("number", TestpOp::Number),
                        ("notanumber", TestpOp::NotANumber),
                        ("normal", TestpOp::Normal),
                        ("subnormal", TestpOp::Subnormal),
                    ])
                    .ok_or_else(|| m.err("needs a test"))?;
                let ty = m.one_type()?;
                let (fmt, _) = ty.float().ok_or_else(|| m.err("needs a float type"))?;
                Op::Testp { op, fmt, d: self.dst(&o[0])?, a: self.src(&o[1], ty)? }
            }
            "cvt" => self.cvt(inst, &mut m)?,
            "bra" => {
                let o = self.operands(inst, 1..=1)?;
                let Operand::Name(label) = &o[0] else { return Err(m.err("needs a label")) };
                Op::Bra { target: self.label(label)? }
            }
            "brx" => {
                let o = self.operands(inst, 2..=2)?;
                if !m.take("idx") {
                    return Err(m.err("only brx.idx exists"));
                }
                let Operand::Name(table) = &o[1] else { return Err(m.err("needs a .branchtargets label")) };
                let table = *self.table_labels.get(table).ok_or_else(|| m.err(&format!("unknown .branchtargets `{table}`")))?;
                Op::BrxIdx { a: self.src(&o[0], Ty { kind: Kind::Unsigned, bits: 32 })?, table }
            }
            "call" => self.call(inst)?,
            "ret" => Op::Ret,
            "exit" => Op::Exit,
            "trap" => Op::Trap,
            "membar" | "fence" | "prefetch" | "prefetchu" | "nanosleep" | "pmevent" => {
                m.parts.iter().zip(m.used.iter_mut()).for_each(|(_, u)| *u = true);
                Op::Nop
            }
            "bar" | "barrier" => self.barrier(inst, &mut m)?,
            "shfl" => {
                let o = self.operands(inst, 5..=5)?;
                if !m.take("sync") {
                    return Err(m.err("only shfl.sync is supported (the non-sync form is gone since sm_70)"));
                }
                let mode = m
                    .pick(&[("up", ShflMode::Up), ("down", ShflMode::Down), ("bfly", ShflMode::Bfly), ("idx", ShflMode::Idx)])
                    .ok_or_else(|| m.err("needs a mode"))?;
                let ty = m.one_type()?;
                let (d, p) = self.dst_pair(&o[0])?;
                let u32t = Ty { kind: Kind::Unsigned, bits: 32 };
                Op::Shfl {
                    mode,
                    d,
                    p,
                    a: self.src(&o[1], ty)?,
                    b: self.src(&o[2], u32t)?,
                    c: self.src(&o[3], u32t)?,
                    mask: self.src(&o[4], u32t)?,
                }
            }
            "vote" => {
                let o = self.operands(inst, 3..=3)?;
                if !m.take("sync") {
                    return Err(m.err("only vote.sync is supported"));
                }
                let mode = m
                    .pick(&[("all", VoteMode::All), ("any", VoteMode::Any), ("uni", VoteMode::Uni), ("ballot", VoteMode::Ballot)])
                    .ok_or_else(|| m.err("needs a mode"))?;
                m.types();
                let (a, negate) = self.pred(&o[1])?;
                Op::Vote { mode, d: self.dst(&o[0])?, a, negate, mask: self.src(&o[2], Ty { kind: Kind::Unsigned, bits: 32 })? }
            }
            "redux" => {
                let o = self.operands(inst, 3..=3)?;
                if !m.take("sync") {
                    return Err(m.err("needs .sync"));
                }
                let op = m
                    .pick(&[
                        ("add", ReduxOp::Add),
                        ("min", ReduxOp::Min),
                        ("max", ReduxOp::Max),
                        ("and", ReduxOp::And),
                        ("or", ReduxOp::Or),
                        ("xor", ReduxOp::Xor),
                    ])
                    .ok_or_else(|| m.err("needs an operation"))?;
                let ty = m.one_type()?;
                if ty.bits != 32 || !ty.is_int() {
                    return Err(m.err("only 32-bit integer redux is supported"));
                }
                let u32t = Ty { kind: Kind::Unsigned, bits: 32 };
                Op::Redux { op, signed: ty.signed(), d: self.dst(&o[0])?, a: self.src(&o[1], ty)?, mask: self.src(&o[2], u32t)? }
            }
            "match" => {
                let o = self.operands(inst, 3..=3)?;
                let all = m.pick(&[("any", false), ("all", true)]).ok_or_else(|| m.err("needs .any or .all"))?;
                if !m.take("sync") {
                    return Err(m.err("needs .sync"));
                }
                let ty = m.one_type()?;
                let (d, p) = self.dst_pair(&o[0])?;
                Op::Match {
                    all,
                    wide: ty.bits == 64,
                    d,
                    p,
                    a: self.src(&o[1], ty)?,
                    mask: self.src(&o[2], Ty { kind: Kind::Unsigned, bits: 32 })?,
                }
            }
            "activemask" => {
                let o = self.operands(inst, 1..=1)?;
                m.types();
                Op::Activemask { d: self.dst(&o[0])? }
            }
            other => return Err(self.err(format!("unsupported instruction `{other}` (in `{}`)", inst.opcode))),
        };
        m.finish()?;
        Ok(op)
    }

    /// `d` or `d|p`; `p` is [`SINK`] when absent.
    fn dst_pair(&self, op: &Operand) -> Result<(Slot, Slot), Error> {
        match op {
            Operand::Pipe(d, p) => Ok((self.dst(d)?, self.dst(p)?)),
            other => Ok((self.dst(other)?, SINK)),
        }
    }

    fn mov(&mut self, inst: &InstAst, m: &mut Mods) -> Result<Op, Error> {
        let o = self.operands(inst, 2..=2)?;
        let ty = m.one_type()?;
        if let Operand::Vector(parts) = &o[0] {
            let (count, bits) = self.parts_of(parts.len(), ty)?;
            let mut slots = [SINK; 4];
            for (slot, part) in slots.iter_mut().zip(parts) {
                *slot = self.dst(part)?;
            }
            return Ok(Op::Unpack { parts: slots, count, bits, a: self.src(&o[1], ty)? });
        }
        let d = self.dst(&o[0])?;
        match &o[1] {
            Operand::Vector(parts) => {
                let (count, bits) = self.parts_of(parts.len(), ty)?;
                let part_ty = Ty { kind: Kind::Bits, bits };
                let mut slots = [ZERO; 4];
                for (slot, part) in slots.iter_mut().zip(parts) {
                    *slot = self.src(part, part_ty)?;
                }
                Ok(Op::Pack { d, parts: slots, count, bits })
            }
            Operand::Name(name) if matches!(name.as_str(), "%clock" | "%clock64" | "%globaltimer" | "%globaltimer_lo") => {
                Ok(Op::Clock { d })
            }
            Operand::Name(name) if matches!(self.lookup(name), Some(Binding::Local(_))) => {
                let Some(Binding::Local(offset)) = self.lookup(name) else { unreachable!() };
                let offset = self.konst(u64::from(offset));
                Ok(Op::Int { op: IntOp::Add, bits: ty.bits, signed: false, d, a: FRAME_LOCAL, b: offset })
            }
            a => Ok(Op::Mov { d, a: self.src(a, ty)? }),
        }
    }

    fn parts_of(&self, count: usize, ty: Ty) -> Result<(u8, u8), Error> {
        if !(2..=4).contains(&count) || !(ty.bits as usize).is_multiple_of(count) {
            return Err(self.err(format!("cannot split a {}-bit value into {count} parts", ty.bits)));
        }
        Ok((count as u8, (ty.bits as usize / count) as u8))
    }

    /// Vector count and element slots of a `.v2` / `.v4` access.
    fn vector(&self, m: &mut Mods) -> u8 {
        m.pick(&[("v2", 2), ("v4", 4)]).unwrap_or(1)
    }

    fn load(&mut self, inst: &InstAst, m: &mut Mods) -> Result<Op, Error> {
        let o = self.operands(inst, 2..=3)?; // an optional cache-policy operand is ignored
        let space = m.space().unwrap_or(Space::Generic);
        let count = self.vector(m);
        let ty = m.one_type()?;
        let mut d = [SINK; 4];
        match &o[0] {
            Operand::Vector(parts) if parts.len() == count as usize => {
                for (slot, part) in d.iter_mut().zip(parts) {
                    *slot = self.dst(part)?;
                }
            }
            single if count == 1 => d[0] = self.dst(single)?,
            _ => return Err(m.err("the destination does not match the vector width")),
        }
        let (space, base, offset) = self.address(&o[1], space)?;
        Ok(Op::Ld { space, bits: ty.bits, signed: ty.signed(), count, d, base, offset })
    }

    fn store(&mut self, inst: &InstAst, m: &mut Mods) -> Result<Op, Error> {
        let o = self.operands(inst, 2..=3)?;
        let space = m.space().unwrap_or(Space::Generic);
        let count = self.vector(m);
        let ty = m.one_type()?;
        let mut s = [ZERO; 4];
        match &o[1] {
            Operand::Vector(parts) if parts.len() == count as usize => {
                for (slot, part) in s.iter_mut().zip(parts) {
                    *slot = self.src(part, ty)?;
                }
            }
            single if count == 1 => s[0] = self.src(single, ty)?,
            _ => return Err(m.err("the source does not match the vector width")),
        }
        let (space, base, offset) = self.address(&o[0], space)?;
        if space == Space::KernelParam || space == Space::Const {
            return Err(m.err("kernel parameters and constants are read-only"));
        }
        Ok(Op::St { space, bits: ty.bits, count, s, base, offset })
    }

    fn atom(&mut self, inst: &InstAst, m: &mut Mods, red: bool) -> Result<Op, Error> {
        let space = m.space().unwrap_or(Space::Generic);
        let op = m
            .pick(&[
                ("add", AtomOp::Add),
                ("min", AtomOp::Min),
                ("max", AtomOp::Max),
                ("exch", AtomOp::Exch),
                ("cas", AtomOp::Cas),
                ("and", AtomOp::And),
                ("or", AtomOp::Or),
                ("xor", AtomOp::Xor),
                ("inc", AtomOp::Inc),
                ("dec", AtomOp::Dec),
            ])
            .ok_or_else(|| m.err("needs an operation"))?;
        let ty = m.one_type()?;
        let aty = match ty.kind {
            Kind::Float(Fmt::F32) => AtomTy::F32,
            Kind::Float(Fmt::F64) => AtomTy::F64,
            _ if ty.is_int() && matches!(ty.bits, 32 | 64) => AtomTy::Int { bits: ty.bits, signed: ty.signed() },
            _ => return Err(m.err("unsupported atomic type")),
        };
        if matches!(aty, AtomTy::F32 | AtomTy::F64) && !matches!(op, AtomOp::Add | AtomOp::Exch) {
            return Err(m.err("floating-point atomics support add and exch"));
        }
        let operands = if red {
            2..=2
        } else if op == AtomOp::Cas {
            4..=4
        } else {
            3..=3
        };
        let o = self.operands(inst, operands)?;
        let (d, rest) = if red { (SINK, o) } else { (self.dst(&o[0])?, &o[1..]) };
        let (space, base, offset) = self.address(&rest[0], space)?;
        if !matches!(space, Space::Global | Space::Shared | Space::Generic) {
            return Err(m.err("atomics work on global, shared or generic addresses"));
        }
        let b = self.src(&rest[1], ty)?;
        let c = if op == AtomOp::Cas { self.src(&rest[2], ty)? } else { ZERO };
        Ok(Op::Atom { space, op, ty: aty, d, base, offset, b, c })
    }

    fn arith(&mut self, inst: &InstAst, mnemonic: &str, m: &mut Mods) -> Result<Op, Error> {
        let (mnemonic, carry_in) = match mnemonic {
            "addc" => ("add", true),
            "subc" => ("sub", true),
            "madc" => ("mad", true),
            other => (other, false),
        };
        let carry_out = m.take("cc");
        let hi = m.take("hi");
        let wide = m.take("wide");
        let lo = m.take("lo");
        let sat = m.take("sat");
        let ftz = m.take("ftz");
        let rnd = m.rounding();
        let approx = m.take("approx");
        let full = m.take("full");
        let nan = m.take("NaN");
        let ty = m.one_type()?;
        let three = matches!(mnemonic, "mad" | "fma");
        let o = self.operands(inst, if three { 4..=4 } else { 3..=3 })?;
        let d = self.dst(&o[0])?;

        if let Some((fmt, pair)) = ty.float() {
            let a = self.src(&o[1], ty)?;
            let b = self.src(&o[2], ty)?;
            let c = if three { self.src(&o[3], ty)? } else { ZERO };
            if carry_in || carry_out || hi || wide || lo {
                return Err(m.err("integer modifiers on a float type"));
            }
            let op = match mnemonic {
                "add" => FloatOp::Add,
                "sub" => FloatOp::Sub,
                "mul" => FloatOp::Mul,
                "mad" | "fma" => FloatOp::Fma,
                "div" if approx || full => {
                    if fmt != Fmt::F32 || pair {
                        return Err(m.err("div.approx / div.full are f32 only"));
                    }
                    return Ok(Op::Approx { op: ApproxOp::Div, f64: false, ftz, d, a, b });
                }
                "div" => {
                    if rnd.is_none() && fmt != Fmt::F64 {
                        return Err(m.err("f32 division needs .rn, .rz, .rm, .rp, .approx or .full"));
                    }
                    FloatOp::Div
                }
                "min" | "max" => return Ok(Op::MinMax { max: mnemonic == "max", nan, fmt, pair, ftz, d, a, b }),
                _ => return Err(m.err("not a floating-point operation")),
            };
            let rnd = rnd.unwrap_or(Rnd::Nearest);
            if fmt == Fmt::F32 && !pair && rnd == Rnd::Nearest && !sat {
                return Ok(Op::F32 { op, ftz, d, a, b, c });
            }
            return Ok(Op::Float { op, fmt, pair, rnd, ftz, sat, d, a, b, c });
        }
        if !ty.is_int() {
            return Err(m.err("needs an integer or float type"));
        }
        let (bits, signed) = (ty.bits, ty.signed());
        let wide_ty = Ty { kind: ty.kind, bits: ty.bits * 2 };
        let a = self.src(&o[1], ty)?;
        let b = self.src(&o[2], ty)?;
        if carry_in || carry_out {
            let op = match (mnemonic, hi) {
                ("add", _) => CarryOp::Add,
                ("sub", _) => CarryOp::Sub,
                ("mad", false) => CarryOp::MadLo,
                ("mad", true) => CarryOp::MadHi,
                _ => return Err(m.err("carry chains exist for add, sub and mad")),
            };
            let c = if three { self.src(&o[3], ty)? } else { ZERO };
            return Ok(Op::Carry { op, carry_in, carry_out, bits, signed, d, a, b, c });
        }
        if three {
            if mnemonic != "mad" || sat {
                return Err(m.err("integer fma does not exist; mad.sat is not supported"));
            }
            let c = self.src(&o[3], if wide { wide_ty } else { ty })?;
            return Ok(Op::Mad { hi, wide, bits, signed, d, a, b, c });
        }
        let op = match mnemonic {
            "add" if sat => IntOp::AddSat,
            "sub" if sat => IntOp::SubSat,
            "add" => IntOp::Add,
            "sub" => IntOp::Sub,
            "mul" if hi => IntOp::MulHi,
            "mul" if wide => IntOp::MulWide,
            "mul" => IntOp::MulLo,
            "div" => IntOp::Div,
            "rem" => IntOp::Rem,
            "min" => IntOp::Min,
            "max" => IntOp::Max,
            _ => return Err(m.err("not an integer operation")),
        };
        if sat && !(matches!(op, IntOp::AddSat | IntOp::SubSat) && bits == 32 && signed) {
            return Err(m.err(".sat is only defined for add/sub.s32"));
        }
        Ok(Op::Int { op, bits, signed, d, a, b })
    }

    fn unary(&mut self, inst: &InstAst, mnemonic: &str, m: &mut Mods) -> Result<Op, Error> {
        let o = self.operands(inst, 2..=2)?;
        let ftz = m.take("ftz");
        let shift_amount = m.take("shiftamt");
        let ty = m.one_type()?;
        let d = self.dst(&o[0])?;
        if let Some((fmt, pair)) = ty.float() {
            if !matches!(mnemonic, "abs" | "neg") {
                return Err(m.err("needs an integer type"));
            }
            return Ok(Op::AbsNeg { neg: mnemonic == "neg", fmt, pair, ftz, d, a: self.src(&o[1], ty)? });
        }
        if ty.kind == Kind::Pred {
            return match mnemonic {
                "not" => Ok(Op::Int { op: IntOp::Xor, bits: 8, signed: false, d, a: self.src(&o[1], ty)?, b: ONE }),
                _ => Err(m.err("only not works on predicates")),
            };
        }
        let op = match mnemonic {
            "abs" => IntUnOp::Abs,
            "neg" => IntUnOp::Neg,
            "not" => IntUnOp::Not,
            "cnot" => IntUnOp::Cnot,
            "popc" => IntUnOp::Popc,
            "clz" => IntUnOp::Clz,
            "brev" => IntUnOp::Brev,
            _ if shift_amount => IntUnOp::BfindShiftAmount,
            _ => IntUnOp::Bfind,
        };
        Ok(Op::IntUnary { op, bits: ty.bits, signed: ty.signed(), d, a: self.src(&o[1], ty)? })
    }

    fn setp(&mut self, inst: &InstAst, m: &mut Mods) -> Result<Op, Error> {
        let o = self.operands(inst, 3..=4)?;
        let cmp_name = m
            .take_any(&["eq", "ne", "lt", "le", "gt", "ge", "lo", "ls", "hi", "hs", "equ", "neu", "ltu", "leu", "gtu", "geu", "num", "nan"])
            .ok_or_else(|| m.err("needs a comparison"))?;
        let combine = m.pick(&[("and", BoolOp::And), ("or", BoolOp::Or), ("xor", BoolOp::Xor)]);
        let ftz = m.take("ftz");
        let ty = m.one_type()?;
        let cmp = match cmp_name {
            "eq" => Cmp::Eq,
            "ne" => Cmp::Ne,
            "lt" | "lo" => Cmp::Lt,
            "le" | "ls" => Cmp::Le,
            "gt" | "hi" => Cmp::Gt,
            "ge" | "hs" => Cmp::Ge,
            "equ" => Cmp::Equ,
            "neu" => Cmp::Neu,
            "ltu" => Cmp::Ltu,
            "leu" => Cmp::Leu,
            "gtu" => Cmp::Gtu,
            "geu" => Cmp::Geu,
            "num" => Cmp::Num,
            _ => Cmp::Nan,
        };
        let kind = match ty.float() {
            Some((_, true)) => return Err(m.err("setp on f16x2 / bf16x2 is not supported")),
            Some((fmt, false)) => CmpKind::Float { fmt, ftz },
            None if matches!(cmp, Cmp::Eq | Cmp::Ne | Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge) => {
                let signed = ty.signed() && !matches!(cmp_name, "lo" | "ls" | "hi" | "hs");
                CmpKind::Int { bits: ty.bits.max(8), signed }
            }
            None => return Err(m.err("unordered comparisons need a float type")),
        };
        let (d, d2) = self.dst_pair(&o[0])?;
        let a = self.src(&o[1], ty)?;
        let b = self.src(&o[2], ty)?;
        let (combine, c) = match (combine, o.get(3)) {
            (Some(op), Some(c)) => {
                let (c, negated) = self.pred(c)?;
                (Some((op, negated)), c)
            }
            (None, None) => (None, ZERO),
            _ => return Err(m.err("a combining operation (.and/.or/.xor) needs a predicate operand and vice versa")),
        };
        Ok(Op::Setp { cmp, kind, combine, d, d2, a, b, c })
    }

    fn transcendental(&mut self, inst: &InstAst, mnemonic: &str, m: &mut Mods) -> Result<Op, Error> {
        let o = self.operands(inst, 2..=2)?;
        let approx = m.take("approx");
        let ftz = m.take("ftz");
        let rnd = m.rounding();
        let ty = m.one_type()?;
        let d = self.dst(&o[0])?;
        let a = self.src(&o[1], ty)?;
        let f64 = ty.kind == Kind::Float(Fmt::F64);
        if !matches!(ty.kind, Kind::Float(Fmt::F32 | Fmt::F64)) {
            return Err(m.err("only f32 and f64 are supported"));
        }
        if !approx {
            let op = match mnemonic {
                "sqrt" => FloatOp::Sqrt,
                "rcp" => FloatOp::Rcp,
                _ => return Err(m.err("needs .approx")),
            };
            let rnd = rnd.ok_or_else(|| m.err("needs a rounding modifier or .approx"))?;
            if !f64 && rnd == Rnd::Nearest {
                return Ok(Op::F32 { op, ftz, d, a, b: ZERO, c: ZERO });
            }
            let fmt = if f64 { Fmt::F64 } else { Fmt::F32 };
            return Ok(Op::Float { op, fmt, pair: false, rnd, ftz, sat: false, d, a, b: ZERO, c: ZERO });
        }
        let op = match mnemonic {
            "sqrt" => ApproxOp::Sqrt,
            "rcp" => ApproxOp::Rcp,
            "rsqrt" => ApproxOp::Rsqrt,
            "ex2" => ApproxOp::Ex2,
            "lg2" => ApproxOp::Lg2,
            "sin" => ApproxOp::Sin,
            "cos" => ApproxOp::Cos,
            _ => ApproxOp::Tanh,
        };
        if f64 && !matches!(op, ApproxOp::Rcp | ApproxOp::Rsqrt) {
            return Err(m.err("only rcp and rsqrt have f64 approximations"));
        }
        Ok(Op::Approx { op, f64, ftz, d, a, b: ZERO })
    }

    fn cvt(&mut self, inst: &InstAst, m: &mut Mods) -> Result<Op, Error> {
        let rnd = m.rounding();
        let int_rnd = m.int_rounding();
        let ftz = m.take("ftz");
        let sat = m.take("sat");
        let relu = m.take("relu");
        let types = m.types();
        let [dty, sty] = types[..] else { return Err(m.err("expects a destination and a source type")) };
        let cvt_ty = |ty: Ty| -> Result<CvtTy, Error> {
            match ty.kind {
                Kind::Float(fmt) => Ok(CvtTy::Float(fmt)),
                Kind::Bits | Kind::Unsigned | Kind::Signed if ty.bits <= 64 => Ok(CvtTy::Int { bits: ty.bits, signed: ty.signed() }),
                _ => Err(m.err("unsupported conversion type")),
            }
        };
        if let Kind::Pair(fmt) = dty.kind {
            let o = self.operands(inst, 3..=3)?;
            if sty.kind != Kind::Float(Fmt::F32) {
                return Err(m.err("packing conversions read two f32 values"));
            }
            let rnd = rnd.ok_or_else(|| m.err("needs a rounding modifier"))?;
            return Ok(Op::CvtPack { fmt, rnd, relu, d: self.dst(&o[0])?, a: self.src(&o[1], sty)?, b: self.src(&o[2], sty)? });
        }
        let o = self.operands(inst, 2..=2)?;
        let (dst, src) = (cvt_ty(dty)?, cvt_ty(sty)?);
        let (rnd, integral) = match (int_rnd, rnd) {
            (Some(r), None) => (r, true),
            (None, Some(r)) => (r, false),
            (None, None) => {
                if matches!((dst, src), (CvtTy::Int { .. }, CvtTy::Float(_))) {
                    return Err(m.err("float-to-integer conversions need .rni, .rzi, .rmi or .rpi"));
                }
                (Rnd::Nearest, false)
            }
            _ => return Err(m.err("two rounding modifiers")),
        };
        Ok(Op::Cvt { dst, src, rnd, integral, sat, ftz, relu, d: self.dst(&o[0])?, a: self.src(&o[1], sty)? })
    }

    fn barrier(&mut self, inst: &InstAst, m: &mut Mods) -> Result<Op, Error> {
        if m.take("warp") {
            let o = self.operands(inst, 1..=1)?;
            if !m.take("sync") {
                return Err(m.err("needs .sync"));
            }
            return Ok(Op::WarpSync { mask: self.src(&o[0], Ty { kind: Kind::Unsigned, bits: 32 })? });
        }
        let u32t = Ty { kind: Kind::Unsigned, bits: 32 };
        let op = if m.take("sync") {
            BarOp::Sync
        } else if m.take("arrive") {
            BarOp::Arrive
        } else if m.take("red") {
            m.pick(&[("popc", BarOp::RedPopc), ("and", BarOp::RedAnd), ("or", BarOp::RedOr)])
                .ok_or_else(|| m.err("needs .popc, .and or .or"))?
        } else {
            return Err(m.err("needs .sync, .arrive or .red"));
        };
        m.types();
        let o = &inst.operands;
        let reduces = matches!(op, BarOp::RedPopc | BarOp::RedAnd | BarOp::RedOr);
        let (d, rest) = if reduces {
            let (first, rest) = o.split_first().ok_or_else(|| m.err("needs a destination"))?;
            (self.dst(first)?, rest)
        } else {
            (SINK, &o[..])
        };
        let (rest, (p, p_neg)) = if reduces {
            let (last, rest) = rest.split_last().ok_or_else(|| m.err("needs a predicate"))?;
            (rest, self.pred(last)?)
        } else {
            (rest, (ZERO, false))
        };
        let (id, count) = match rest {
            [id] => (self.src(id, u32t)?, None),
            [id, count] => (self.src(id, u32t)?, Some(self.src(count, u32t)?)),
            _ => return Err(m.err("needs a barrier number and optionally a thread count")),
        };
        if op == BarOp::Arrive && count.is_none() {
            return Err(m.err("bar.arrive needs a thread count"));
        }
        Ok(Op::Bar { op, id, count, d, p, p_neg })
    }

    fn call(&mut self, inst: &InstAst) -> Result<Op, Error> {
        let (rets, rest) = match inst.operands.split_first() {
            Some((Operand::List(rets), rest)) => (rets.as_slice(), rest),
            _ => (&[][..], &inst.operands[..]),
        };
        let (callee, args) = match rest {
            [Operand::Name(callee)] => (callee, &[][..]),
            [Operand::Name(callee), Operand::List(args)] => (callee, args.as_slice()),
            [Operand::Name(_), Operand::List(_), _] => return Err(self.err("indirect calls (with a prototype) are not supported")),
            _ => return Err(self.err("expected `call (rets), function, (args)`")),
        };
        let index = match (self.ctx.funcs.get(callee.as_str()), self.lookup(callee)) {
            (Some(&index), _) => index,
            (None, Some(Binding::Reg(_))) => return Err(self.err("indirect calls through a register are not supported")),
            _ => return Err(self.err(format!("call of unknown function `{callee}`"))),
        };
        let (params, returns, defined) = &self.ctx.signatures[index as usize];
        if !defined {
            return Err(self.err(format!(
                "`{callee}` is declared but has no body in this module (external functions such as vprintf are not supported)"
            )));
        }
        let pairs = |names: &[Operand], slots: &[ParamSlot], what: &str| -> Result<Vec<(u32, u32, u32)>, Error> {
            if names.len() != slots.len() {
                return Err(self.err(format!("`{callee}` takes {} {what}, the call passes {}", slots.len(), names.len())));
            }
            names
                .iter()
                .zip(slots)
                .map(|(name, slot)| match name {
                    Operand::Name(n) => match self.lookup(n) {
                        Some(Binding::FrameParam { offset, bytes }) if bytes >= slot.bytes => Ok((offset, slot.offset, slot.bytes)),
                        Some(Binding::FrameParam { .. }) => Err(self.err(format!("`{n}` is smaller than `{}`", slot.name))),
                        _ => Err(self.err(format!("call operand `{n}` must be a .param variable"))),
                    },
                    _ => Err(self.err("call operands must be .param variables")),
                })
                .collect()
        };
        let args = pairs(args, params, "parameters")?;
        let rets = pairs(rets, returns, "return values")?.into_iter().map(|(caller, callee, bytes)| (callee, caller, bytes)).collect();
        self.calls.push(CallSite { callee: index, args, rets });
        Ok(Op::Call { site: (self.calls.len() - 1) as u32 })
    }
}

fn describe_range(n: &std::ops::RangeInclusive<usize>) -> String {
    if n.start() == n.end() {
        n.start().to_string()
    } else {
        format!("{} to {}", n.start(), n.end())
    }
}
