//! `cargo xtask build-kernels`: every GPU kernel of the repository, checked without a GPU.
//!
//! 1. The CUDA backend's CUDA C (`crates/cvn-autograd/src/**/kernels.cu`) against its checked-in
//!    PTX: `xtask/nvrtc.py` compiles each file with NVRTC 12.4 and the build fails when a
//!    `kernels.ptx` differs from what NVRTC makes (stale); `--regenerate` writes them instead.
//!    Without NVRTC (`pip install --target /tmp/nvrtc124 nvidia-cuda-nvrtc-cu12==12.4.127`) this
//!    step says so and is skipped, unless `--require-nvrtc` (CI) makes that an error.
//! 2. Every PTX file — the handwritten `kernels/*.ptx` and the generated ones — assembled with
//!    `ptxas` for each target architecture (default sm_80 and sm_90): registers, shared memory,
//!    stack and spills per kernel, failing on any assembler error, spill or stack frame.
//!
//! `ptxas` is looked up on PATH, then in Python's site-packages as installed by
//! `pip install nvidia-cuda-nvcc` (`nvidia/cu13/bin/ptxas`, or `cu12`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::parity::repo_path;

#[derive(clap::Args)]
#[command(after_help = "Example: cargo xtask build-kernels --require-nvrtc")]
pub struct Args {
    /// Target architectures, repeated for several.
    #[arg(long = "arch", default_values_t = ["sm_80".to_string(), "sm_90".to_string()])]
    archs: Vec<String>,
    /// The ptxas binary [default: PATH, then the nvidia-cuda-nvcc wheel].
    #[arg(long, value_name = "FILE")]
    ptxas: Option<PathBuf>,
    /// Directory of handwritten .ptx files [default: the repository's kernels/].
    #[arg(long, value_name = "DIR")]
    kernels: Option<PathBuf>,
    /// Write the PTX NVRTC makes from each kernels.cu instead of failing when it is stale.
    #[arg(long)]
    regenerate: bool,
    /// Fail when NVRTC is not installed (CI), rather than skipping the staleness check.
    #[arg(long)]
    require_nvrtc: bool,
    /// Keep the assembled cubins here (for cuobjdump -sass) [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// What ptxas reported for one entry point.
#[derive(Debug, Default, PartialEq)]
struct Resources {
    kernel: String,
    registers: u32,
    shared_bytes: u32,
    stack_bytes: u32,
    spill_stores: u32,
    spill_loads: u32,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ptxas = match args.ptxas {
        Some(p) => p,
        None => {
            find_ptxas().context("ptxas not found on PATH nor in Python's site-packages; `pip install nvidia-cuda-nvcc` provides it")?
        }
    };
    let dir = match args.kernels {
        Some(d) => d,
        None => repo_path("kernels").context("cannot find the repository's kernels/; pass --kernels DIR")?,
    };
    let out = args.out.unwrap_or_else(|| std::env::temp_dir().join("lwta-ptxas"));
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ptx"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no .ptx files in {}", dir.display());
    }
    let backend = repo_path("crates/cvn-autograd/src").context("cannot find crates/cvn-autograd/src")?;
    let mut sources = Vec::new();
    find_files(&backend, "kernels.cu", &mut sources)?;
    sources.sort();
    check_generated(&sources, &backend.join("cuda"), args.regenerate, args.require_nvrtc)?;
    files.extend(sources.iter().map(|cu| cu.with_extension("ptx")));
    let version = Command::new(&ptxas).arg("--version").output().with_context(|| format!("running {}", ptxas.display()))?;
    let version = String::from_utf8_lossy(&version.stdout);
    println!("ptxas: {} ({})", ptxas.display(), version.lines().last().unwrap_or("").trim());
    println!("{:<28} {:<6} {:<26} {:>5} {:>8} {:>7} {:>13}", "file", "arch", "kernel", "regs", "smem B", "stack B", "spill st/ld");

    let mut problems = Vec::new();
    for file in &files {
        let name = display_name(file);
        for arch in &args.archs {
            let cubin = out.join(format!("{}.{arch}.cubin", name.replace('/', "_").trim_end_matches(".ptx")));
            let output = Command::new(&ptxas)
                .args(["-v", "--warn-on-spills", &format!("-arch={arch}"), "-o"])
                .arg(&cubin)
                .arg(file)
                .output()
                .with_context(|| format!("running {}", ptxas.display()))?;
            let log = String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout);
            if !output.status.success() || log.contains("error") {
                problems.push(format!("{} for {arch}: ptxas failed:\n{log}", file.display()));
                continue;
            }
            for r in parse_resources(&log) {
                println!(
                    "{:<28} {:<6} {:<26} {:>5} {:>8} {:>7} {:>6}/{:<6}",
                    name, arch, r.kernel, r.registers, r.shared_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
                );
                if r.spill_stores + r.spill_loads > 0 || r.stack_bytes > 0 {
                    problems.push(format!(
                        "{} {arch} {}: {} B stack, {}/{} B spilled",
                        file.display(),
                        r.kernel,
                        r.stack_bytes,
                        r.spill_stores,
                        r.spill_loads
                    ));
                }
            }
            if log.contains("warning") {
                problems.push(format!("{} for {arch}: ptxas warnings:\n{log}", file.display()));
            }
        }
    }
    println!("cubins in {}", out.display());
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(())
}

/// `ops/conv/kernels.ptx` for a generated file, `lwta_f32.ptx` for a handwritten one.
fn display_name(file: &Path) -> String {
    let parts: Vec<&str> = file.iter().filter_map(|c| c.to_str()).collect();
    match parts.iter().rposition(|c| *c == "src") {
        Some(i) => parts[i + 1..].join("/"),
        None => parts.last().unwrap_or(&"").to_string(),
    }
}

/// Every file named `name` below `dir`.
fn find_files(dir: &Path, name: &str, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            find_files(&path, name, out)?;
        } else if path.file_name().is_some_and(|n| n == name) {
            out.push(path);
        }
    }
    Ok(())
}

/// Step 1: the checked-in PTX against NVRTC 12.4's output for `sources` (see the module docs).
fn check_generated(sources: &[PathBuf], include: &Path, regenerate: bool, require: bool) -> anyhow::Result<()> {
    let script = repo_path("xtask/nvrtc.py").context("cannot find xtask/nvrtc.py")?;
    let mut cmd = Command::new("python3");
    cmd.arg(&script).arg("--include").arg(include);
    if !regenerate {
        cmd.arg("--check");
    }
    let status = cmd.args(sources).status().with_context(|| format!("running python3 {}", script.display()))?;
    match status.code() {
        Some(0) if regenerate => println!("nvrtc: regenerated {} PTX files from their kernels.cu", sources.len()),
        Some(0) => println!("nvrtc: {} checked-in PTX files match NVRTC 12.4's output", sources.len()),
        Some(3) if !require => println!("nvrtc: NVRTC 12.4 not found; the checked-in PTX was not compared with its CUDA C"),
        _ => bail!("the CUDA C kernels and their checked-in PTX disagree or NVRTC failed (see above); `cargo xtask build-kernels --regenerate` rewrites the PTX"),
    }
    Ok(())
}

/// Entry points and their resources from `ptxas -v` output (entries appear as "Compiling entry
/// function 'k'" or "Function properties for k", followed by the stack/spill and "Used" lines).
fn parse_resources(log: &str) -> Vec<Resources> {
    let mut out: Vec<Resources> = Vec::new();
    let mut current: Option<Resources> = None;
    let number_before = |line: &str, unit: &str| -> Option<u32> {
        let end = line.find(unit)?;
        line[..end].trim_end().rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            if let Some(done) = current.take() {
                out.push(done);
            }
            current = Some(Resources { kernel: rest.trim().to_string(), ..Default::default() });
        } else if let Some(r) = current.as_mut() {
            if line.contains("stack frame") {
                r.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
                r.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                r.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") {
                r.registers = number_before(line, "registers").unwrap_or(0);
                r.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out.extend(current);
    out
}

/// `ptxas` on PATH, else in the `nvidia-cuda-nvcc` wheel of the first `python3` on PATH.
fn find_ptxas() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("ptxas")).collect::<Vec<_>>())
        .unwrap_or_default();
    if let Some(found) = on_path.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    let script = "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))";
    let output = Command::new("python3").args(["-c", script]).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .flat_map(|dir| ["cu13", "cu12"].map(|cu| Path::new(dir).join("nvidia").join(cu).join("bin").join("ptxas")))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_verbose_output() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'lwta_bwd_quad_f32' for 'sm_90'\n\
ptxas info    : Function properties for lwta_bwd_quad_f32\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 59 registers, used 0 barriers, 1024 bytes smem, 508 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'lwta_fwd_quad_f32' for 'sm_90'\n\
ptxas info    : Function properties for lwta_fwd_quad_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 39 registers, used 0 barriers, 500 bytes cmem[0]\n";
        let parsed = parse_resources(log);
        assert_eq!(
            parsed,
            vec![
                Resources {
                    kernel: "lwta_bwd_quad_f32".into(),
                    registers: 59,
                    shared_bytes: 1024,
                    stack_bytes: 8,
                    spill_stores: 4,
                    spill_loads: 12
                },
                Resources { kernel: "lwta_fwd_quad_f32".into(), registers: 39, ..Default::default() },
            ]
        );
    }
}
