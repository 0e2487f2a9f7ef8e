//! `cargo xtask gpu-bundle`: packs what a GPU machine without a Rust toolchain needs to check
//! and time the kernels into the git-ignored `.device-bundle/`: this (release) xtask binary, the
//! kernels (for reference: the binary embeds them), the reference fixtures, the PyTorch baseline
//! script and `run.sh`, which runs parity (CPU fixtures, then GPU vs CPU — the LWTA kernels and
//! cvn-autograd's conformance suite on its CUDA backend —, then under
//! compute-sanitizer), the bench, the PyTorch baseline and a short Nsight Compute look, logging to `$OUT`.
//!
//! On the device tool: `run` with `carry: [".device-bundle"]`, command `bash .device-bundle/run.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

#[derive(clap::Args)]
#[command(after_help = "Example: cargo xtask gpu-bundle, then on the GPU machine: bash .device-bundle/run.sh")]
pub struct Args {
    /// Where to put the bundle [default: the repository's .device-bundle].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// The device tool carries at most 64 MiB: the working tree plus carried paths.
const MAX_TRAVEL_BYTES: u64 = 64 << 20;
const MAX_BUNDLE_BYTES: u64 = 60 << 20;

const RUN_SH: &str = r#"#!/usr/bin/env bash
# GPU check of the LWTA kernels, made by `cargo xtask gpu-bundle`. Logs and JSON go to $OUT.
set -u -o pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${OUT:-$HERE/out}"
mkdir -p "$OUT"
X="$HERE/xtask"
# the driver library, wherever the image keeps it (cudarc dlopens libcuda.so.1)
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:/usr/local/nvidia/lib64:/usr/local/nvidia/lib:/usr/lib/x86_64-linux-gnu"
# cuBLAS for cvn-autograd's CUDA backend: a CUDA toolkit, or the wheels PyTorch brings
for d in /usr/local/cuda/lib64 $(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null); do
  [ -d "$d/nvidia/cublas/lib" ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d/nvidia/cublas/lib"
  [ -d "$d" ] && ls "$d"/libcublas.so* > /dev/null 2>&1 && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
export LD_LIBRARY_PATH
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>&1 | tee "$OUT/gpu.txt"

echo "== parity: CPU implementations vs reference fixtures"
"$X" parity --device cpu --fixtures "$HERE/tests/fixtures" > "$OUT/parity_cpu.log" 2>&1 || status=1
grep -E "^FAIL|passed|error" "$OUT/parity_cpu.log"

echo "== parity: LWTA PTX kernels vs CPU reference, then the cvn-autograd conformance suite on CUDA"
"$X" parity --device cuda > "$OUT/parity_cuda.log" 2>&1 || status=1
grep -E "^FAIL|passed|error" "$OUT/parity_cuda.log"
grep -E "^PASS cuda/(tokens2053|nchw8x64)" "$OUT/parity_cuda.log"
echo "conformance on CUDA: $(grep -c '^PASS conformance' "$OUT/parity_cuda.log") passed, $(grep -c '^FAIL conformance' "$OUT/parity_cuda.log") failed"

echo "== compute-sanitizer: memcheck, racecheck, initcheck over the GPU parity checks"
if command -v compute-sanitizer > /dev/null; then
  for tool in memcheck racecheck initcheck; do
    timeout 200 compute-sanitizer --tool $tool --print-limit 10 "$X" parity --device cuda > "$OUT/sanitizer_$tool.log" 2>&1 || status=1
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer_$tool.log"
  done
fi

echo "== bench: LWTA kernels"
"$X" bench --device cuda --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1 || status=1
tail -n 3 "$OUT/bench.log"

echo "== PyTorch eager / torch.compile baseline"
PYTHONUNBUFFERED=1 timeout 200 python3 "$HERE/benches/torch_lwta.py" --json "$OUT/torch.json" > "$OUT/torch.log" 2>&1
tail -n 8 "$OUT/torch.log"

echo "== Nsight Compute: DeiT-T f32 forward (twice) and backward"
if command -v ncu > /dev/null; then
  timeout 120 ncu --kernel-name regex:lwta_ --launch-skip 3 --launch-count 12 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    "$X" bench --device cuda --iters 1 > "$OUT/ncu.txt" 2>&1
  grep -E "lwta_|Memory Throughput|DRAM Throughput|Compute \(SM\) Throughput|Duration|L1/TEX Hit|L2 Hit" "$OUT/ncu.txt" | head -n 40
fi

echo "== results"
"$X" bench --report "$OUT/bench.json" --torch "$OUT/torch.json" 2>&1 | tee "$OUT/table.txt"
exit $status
"#;

pub fn run(args: Args) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        bail!("gpu-bundle copies the running binary, so it must be a release build: `cargo xtask gpu-bundle`");
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
    let bundle = args.out.unwrap_or_else(|| root.join(".device-bundle"));
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle).with_context(|| format!("clearing {}", bundle.display()))?;
    }
    std::fs::create_dir_all(&bundle).with_context(|| format!("creating {}", bundle.display()))?;

    let exe = std::env::current_exe().context("locating the running xtask binary")?;
    copy_file(&exe, &bundle.join("xtask"))?;
    // The release profile keeps debug info (≈ 100 MB); the device needs none of it.
    match Command::new("strip").arg(bundle.join("xtask")).status() {
        Ok(status) if status.success() => {}
        _ => println!("note: `strip` failed or is missing; the binary keeps its debug info"),
    }
    copy_dir(&root.join("kernels"), &bundle.join("kernels"))?;
    copy_dir(&root.join("tests/fixtures"), &bundle.join("tests/fixtures"))?;
    copy_file(&root.join("benches/torch_lwta.py"), &bundle.join("benches/torch_lwta.py"))?;
    let run_sh = bundle.join("run.sh");
    std::fs::write(&run_sh, RUN_SH).with_context(|| format!("writing {}", run_sh.display()))?;
    set_executable(&run_sh)?;
    set_executable(&bundle.join("xtask"))?;

    let size = dir_size(&bundle)?;
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    println!("{}: {:.1} MiB", bundle.display(), mib(size));
    if size > MAX_BUNDLE_BYTES {
        bail!("the bundle is {:.1} MiB, over {} MiB", mib(size), MAX_BUNDLE_BYTES >> 20);
    }
    // The working tree travels with it (tracked and untracked-not-ignored files).
    if let Some(tree) = working_tree_bytes(&root) {
        println!("working tree that travels with it: {:.1} MiB", mib(tree));
        if tree + size > MAX_TRAVEL_BYTES {
            bail!("bundle + working tree = {:.1} MiB, over the {} MiB the device tool carries", mib(tree + size), MAX_TRAVEL_BYTES >> 20);
        }
    }
    println!("device tool: run(carry=[\".device-bundle\"], command=\"bash .device-bundle/run.sh\", timeout_s=560)");
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let target = to.join(path.file_name().context("a directory entry without a name")?);
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            copy_file(&path, &target)?;
        }
    }
    Ok(())
}

/// Bytes of the files git would send: tracked plus untracked-not-ignored (None without git).
fn working_tree_bytes(root: &Path) -> Option<u64> {
    let output =
        Command::new("git").args(["ls-files", "-z", "--cached", "--others", "--exclude-standard"]).current_dir(root).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let files: std::collections::BTreeSet<&[u8]> = output.stdout.split(|&b| b == 0).filter(|f| !f.is_empty()).collect();
    Some(files.into_iter().filter_map(|f| std::fs::metadata(root.join(String::from_utf8_lossy(f).as_ref())).ok()).map(|m| m.len()).sum())
}

fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}
