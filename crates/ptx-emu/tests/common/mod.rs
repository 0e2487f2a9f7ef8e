//! Shared by the test binaries: running a one-line PTX body elementwise, and byte helpers.
#![allow(dead_code)] // each test binary uses its own subset

use ptx_emu::{Arg, Error, LaunchConfig, Memory, Module, Stats};

pub const HEADER: &str = ".version 8.4\n.target sm_80\n.address_size 64\n";

/// How a value of PTX type `ty` travels: (register type, memory type, bytes). Predicates travel
/// as u32 0/1; 8-bit values sit in 16-bit registers.
fn carrier(ty: &str) -> (&str, &str, usize) {
    match ty {
        "pred" => ("pred", "u32", 4),
        "u8" | "s8" | "b8" => ("b16", ty, 1),
        "f16" | "bf16" => ("b16", "b16", 2),
        "f16x2" | "bf16x2" => ("b32", "b32", 4),
        _ => {
            let bytes = ty[1..].parse::<usize>().expect("a sized type") / 8;
            (ty, ty, bytes)
        }
    }
}

/// Runs `body` once per element: thread i loads `%a`, `%b`, `%c` (types `types[0..3]`) from
/// element i of `inputs` and stores `%d` (type `types[3]`). Values are raw bits.
pub fn map(types: [&str; 4], body: &str, inputs: [&[u64]; 3]) -> Vec<u64> {
    let n = inputs.iter().map(|v| v.len()).max().unwrap();
    let names = ["a", "b", "c", "d"];
    let mut decls = String::new();
    let mut loads = String::new();
    for (k, ty) in types.iter().enumerate() {
        let (reg, _, _) = carrier(ty);
        decls += &format!(".reg .{reg} %{};\n", names[k]);
        if *ty == "pred" {
            decls += &format!(".reg .b32 %{}_bits;\n", names[k]);
        }
    }
    for k in 0..3 {
        let (_, mem, bytes) = carrier(types[k]);
        let dst = if types[k] == "pred" { format!("%{}_bits", names[k]) } else { format!("%{}", names[k]) };
        loads += &format!("ld.param.u64 %ptr, [p{k}];\nmad.wide.u32 %ptr, %i, {bytes}, %ptr;\nld.global.{mem} {dst}, [%ptr];\n");
        if types[k] == "pred" {
            loads += &format!("setp.ne.u32 %{0}, %{0}_bits, 0;\n", names[k]);
        }
    }
    let (_, out_mem, out_bytes) = carrier(types[3]);
    let store = if types[3] == "pred" {
        "selp.u32 %d_bits, 1, 0, %d;\nst.global.u32 [%ptr], %d_bits;".to_string()
    } else {
        format!("st.global.{out_mem} [%ptr], %d;")
    };
    let ptx = format!(
        "{HEADER}.visible .entry map(.param .u64 p0, .param .u64 p1, .param .u64 p2, .param .u64 p3, .param .u32 n) {{
.reg .pred %done;
.reg .b32 %i, %t, %n;
.reg .b64 %ptr;
{decls}
mov.u32 %i, %ctaid.x;
mov.u32 %t, %ntid.x;
mul.lo.u32 %i, %i, %t;
mov.u32 %t, %tid.x;
add.u32 %i, %i, %t;
ld.param.u32 %n, [n];
setp.ge.u32 %done, %i, %n;
@%done exit;
{loads}
{body}
ld.param.u64 %ptr, [p3];
mad.wide.u32 %ptr, %i, {out_bytes}, %ptr;
{store}
}}"
    );
    let module = Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
    let mut mem = Memory::new();
    let mut args = Vec::new();
    for k in 0..3 {
        let bytes = carrier(types[k]).2;
        let buffer = mem.alloc(n * bytes).unwrap();
        let data: Vec<u8> = (0..n).flat_map(|i| inputs[k].get(i).copied().unwrap_or(0).to_le_bytes()[..bytes].to_vec()).collect();
        mem.write(buffer, &data).unwrap();
        args.push(Arg::U64(buffer));
    }
    let out = mem.alloc(n * out_bytes).unwrap();
    args.extend([Arg::U64(out), Arg::U32(n as u32)]);
    let blocks = n.div_ceil(128) as u32;
    module
        .launch(&mut mem, "map", LaunchConfig { grid: [blocks, 1, 1], block: [128, 1, 1], dynamic_shared_bytes: 0 }, &args)
        .unwrap_or_else(|e| panic!("{e}\n{body}"));
    mem.read(out, n * out_bytes).unwrap().chunks(out_bytes).map(|c| c.iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b))).collect()
}

/// Bits of f32 values.
pub fn f32_bits(values: &[f32]) -> Vec<u64> {
    values.iter().map(|v| u64::from(v.to_bits())).collect()
}

pub fn f64_bits(values: &[f64]) -> Vec<u64> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// Deterministic pseudo-random 64-bit values (SplitMix64).
pub fn randoms(seed: u64, n: usize) -> Vec<u64> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
        .collect()
}

/// A module from `body` (declarations and entries after the header).
pub fn module(body: &str) -> Module {
    let ptx = format!("{HEADER}{body}");
    Module::parse(&ptx).unwrap_or_else(|e| panic!("{e}\n{ptx}"))
}

/// Launches `entry` with one output buffer of `out_bytes` (first argument) and `args` after it;
/// returns the output bytes.
pub fn launch_with_output(
    module: &Module,
    entry: &str,
    cfg: LaunchConfig,
    out_bytes: usize,
    args: &[Arg],
) -> Result<(Vec<u8>, Stats), Error> {
    let mut mem = Memory::new();
    let out = mem.alloc(out_bytes)?;
    mem.fill(out, 0, out_bytes)?;
    let mut all = vec![Arg::U64(out)];
    all.extend(args.iter().cloned());
    let stats = module.launch(&mut mem, entry, cfg, &all)?;
    Ok((mem.read(out, out_bytes)?, stats))
}

pub fn cfg(grid: u32, block: u32) -> LaunchConfig {
    LaunchConfig { grid: [grid, 1, 1], block: [block, 1, 1], dynamic_shared_bytes: 0 }
}

pub fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes.chunks(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub fn bytes_of_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
