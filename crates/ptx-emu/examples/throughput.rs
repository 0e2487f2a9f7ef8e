//! Emulated instructions per second on a real kernel: the LWTA forward and backward of
//! `kernels/lwta_f32.ptx` (quad and scalar entries, Philox noise on) over 128 tokens × 192
//! channels, U = 8. `cargo run --release -p ptx-emu --example throughput`.

use std::time::Instant;

use ptx_emu::{Arg, LaunchConfig, Memory, Module};

const PTX: &str = include_str!("../../../kernels/lwta_f32.ptx");

fn main() -> Result<(), ptx_emu::Error> {
    let module = Module::parse(PTX)?;
    let (rows, channels, u) = (128u32, 192u32, 8u32);
    let n = (rows * channels) as usize;
    let blocks = n as u32 / u;
    let mut mem = Memory::new();
    let values: Vec<u8> = (0..n).flat_map(|i| ((i % 97) as f32 * 0.03 - 1.4).to_le_bytes()).collect();
    let (x, dy, y, dx, winners) = (mem.alloc(4 * n)?, mem.alloc(4 * n)?, mem.alloc(4 * n)?, mem.alloc(4 * n)?, mem.alloc(blocks as usize)?);
    mem.write(x, &values)?;
    mem.write(dy, &values)?;
    let keys = Arg::Bytes((0..20u32).flat_map(|k| k.wrapping_mul(0x9E37_79B9).to_le_bytes()).collect());
    let noise = [Arg::U32(1), keys, Arg::U32(7), Arg::U32(0)];
    let cfg = |threads: u32, shared: u32| LaunchConfig { grid: [4, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: shared };
    let quad_geometry = [Arg::U32(blocks), Arg::U32(1), Arg::U64(u64::from(u)), Arg::U64(4), Arg::U32(u / 4), Arg::U32(1)];
    let scalar_geometry = [Arg::U32(blocks), Arg::U32(1), Arg::U64(u64::from(u)), Arg::U32(u)];
    let with = |pointers: [u64; 3], geometry: &[Arg], tau: Option<f32>| -> Vec<Arg> {
        let mut args: Vec<Arg> = pointers.iter().map(|&p| Arg::U64(p)).collect();
        args.extend(geometry.iter().cloned());
        args.extend(noise.iter().cloned());
        args.extend(tau.map(Arg::F32));
        args
    };
    let launches = [
        ("lwta_fwd_quad_f32", with([x, y, winners], &quad_geometry, None), cfg(128, 0)),
        ("lwta_bwd_quad_f32", with([x, dy, dx], &quad_geometry, Some(0.6)), cfg(128, 128 * 2 * 16 * (u / 4))),
        ("lwta_fwd_scalar_f32", with([x, y, winners], &scalar_geometry, None), cfg(128, 0)),
        ("lwta_bwd_scalar_f32", with([x, dy, dx], &scalar_geometry, Some(0.6)), cfg(128, 128 * 2 * 4 * u)),
    ];
    let (mut total, start) = (0u64, Instant::now());
    for (entry, args, cfg) in &launches {
        let t = Instant::now();
        let stats = module.launch(&mut mem, entry, *cfg, args)?;
        let seconds = t.elapsed().as_secs_f64();
        println!(
            "{entry:22} {:>11} instructions in {:.3} s: {:.1} M/s",
            stats.instructions,
            seconds,
            stats.instructions as f64 / seconds / 1e6
        );
        total += stats.instructions;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("all                    {total:>11} instructions in {seconds:.3} s: {:.1} M/s", total as f64 / seconds / 1e6);
    Ok(())
}
