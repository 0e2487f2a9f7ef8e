//! Bad input is an error, never a panic: mangled versions of real PTX (lines dropped, text cut
//! short, tokens swapped) parse to `Ok` or `Err`, and whatever still parses runs into errors
//! rather than panics.

mod common;

use common::randoms;
use ptx_emu::{Arg, LaunchConfig, Memory, Module};

const SOURCES: [&str; 3] =
    [include_str!("../../../kernels/lwta_f32.ptx"), include_str!("nvrtc/softmax.ptx"), include_str!("nvrtc/math.ptx")];

#[test]
fn mangled_ptx_parses_to_a_result() {
    let mut parsed = 0;
    for (s, source) in SOURCES.iter().enumerate() {
        let lines: Vec<&str> = source.lines().collect();
        for (k, r) in randoms(s as u64, 150).into_iter().enumerate() {
            let at = (r % lines.len() as u64) as usize;
            let mangled = match k % 3 {
                0 => lines.iter().enumerate().filter(|(i, _)| *i != at).map(|(_, l)| *l).collect::<Vec<_>>().join("\n"),
                1 => source.chars().take((r % source.len() as u64) as usize).collect(),
                _ => {
                    let words: Vec<&str> = source.split(' ').collect();
                    let (i, j) = ((r % words.len() as u64) as usize, ((r >> 32) % words.len() as u64) as usize);
                    let mut words = words;
                    words.swap(i, j);
                    words.join(" ")
                }
            };
            if let Ok(mut module) = Module::parse(&mangled) {
                parsed += 1;
                module.set_instruction_budget(1_000_000);
                // run each entry with zeroed arguments of the right sizes: faults, not panics
                for entry in module.entries() {
                    let args: Vec<Arg> = module.params(entry).unwrap().iter().map(|p| Arg::Bytes(vec![0; p.bytes])).collect();
                    let cfg = LaunchConfig { grid: [1, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 1024 };
                    let mut mem = Memory::new();
                    let _ = module.launch(&mut mem, entry, cfg, &args);
                }
            }
        }
    }
    assert!(parsed > 0, "some mangled texts (a dropped comment line, say) still parse");
}
