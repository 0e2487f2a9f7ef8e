//! `cargo xtask bench --device cuda [--json FILE] [--torch FILE] [--check FILE]`: CUDA-event
//! medians of the LWTA kernels at the anchor shapes (DeiT-T MLP, DeiT-S MLP, ResNet-18 layer1;
//! f32 and bf16), the device-to-device copy bandwidth measured in the same run, and each time's
//! ratio to its floor — the bytes the pass must move (forward: read x, write y; forward+backward:
//! also read x and dy, write dx) at the copy bandwidth.
//!
//! `--torch FILE` merges the JSON of `benches/torch_lwta.py` (PyTorch eager / torch.compile on the
//! same shapes) into the table; `--report FILE` prints a stored `--json` result instead of
//! measuring; `--check FILE` fails when a ratio to the floor grew by more than 10% over that
//! baseline (ratios, not times, so machines of one kind compare).
//!
//! `--device cpu` (or `--cpu`) runs the side-by-side CPU bench of [`crate::bench_cpu`]: ours and
//! `benches/torch_cpu.py` alternating; there `--torch` (no FILE) requires PyTorch, `--no-torch`
//! leaves it out, `--json`, `--report` and `--check` take that bench's JSON (`--check` tolerance
//! 15% by default). Plain `cargo xtask bench` (no `--device` and none of those flags) runs the
//! criterion benches (`cargo bench`) as before.

use std::process::Command;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use cudarc::driver::{sys::CUevent_flags, CudaSlice, CudaStream};
use half::bf16;
use lwta_kernels::cuda::{parity::random_normals, Element, LwtaCuda};
use lwta_kernels::{BlockGeometry, LwtaConfig, Noise};
use serde::{Deserialize, Serialize};

use cvn_autograd::Device;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  cargo xtask bench --cpu --torch --json bench.json --check benches/baselines/cpu_epyc_avx512.json\n  cargo xtask bench --device cuda --json bench.json --check benches/baselines/lwta_cuda_h100.json"
)]
pub struct Args {
    /// cpu (ours beside PyTorch) or cuda / cuda:N (the LWTA kernels on that GPU). Without it and
    /// without any cpu-bench flag: the criterion benches (`cargo bench`).
    #[arg(long)]
    device: Option<String>,
    /// Short for --device cpu.
    #[arg(long)]
    cpu: bool,
    /// Write the measurements as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print a stored measurement (from --json) instead of measuring.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// cpu: run PyTorch beside ours and fail if it does not import (without the flag it runs when
    /// it imports); cuda: FILE, the JSON of benches/torch_lwta.py to show beside the kernels.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    torch: Option<Option<PathBuf>>,
    /// cpu: ours alone.
    #[arg(long, conflicts_with = "torch")]
    no_torch: bool,
    /// Baseline JSON: fail when a ratio (cuda: time ÷ floor; cpu: PyTorch time ÷ ours) got worse
    /// than the baseline's by more than the factor 1 + tolerance.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// The tolerance of --check [default: 0.15 on cpu, 0.10 on cuda].
    #[arg(long, value_name = "FRACTION")]
    tolerance: Option<f64>,
    /// cpu: alternating rounds (ours, PyTorch per workload); medians are reported.
    #[arg(long, value_name = "N", default_value = "5", value_parser = crate::cli::at_least_one)]
    rounds: usize,
    /// cpu: each measurement times calls for at least this long (and at least 3 calls).
    #[arg(long, value_name = "S", default_value = "1.0")]
    seconds: f64,
    /// cpu: a short run: 2 rounds of 0.3 s measurements, 128 concepts for the text tower.
    #[arg(long)]
    quick: bool,
    /// cpu: the Python interpreter that runs benches/torch_cpu.py.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: String,
    /// Timed repetitions per measurement (after warm-up); the median is reported.
    #[arg(long, value_name = "N", default_value = "30", value_parser = crate::cli::at_least_one)]
    iters: usize,
    /// Also time every kernel with the grid at these multiples of the resident CTAs (e.g. 1,4,16)
    /// and print the ratios to the floor side by side.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    sweep_waves: Vec<u32>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Report {
    device: String,
    /// Device-to-device copy, bytes read + written per second / 1e9.
    copy_gbps: f64,
    results: Vec<Measurement>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Measurement {
    shape: String,
    dtype: String,
    fwd_ms: f64,
    fwd_floor_ms: f64,
    fwd_bwd_ms: f64,
    fwd_bwd_floor_ms: f64,
    /// Forward without noise (deterministic argmax): how much of `fwd_ms` the noise costs.
    #[serde(default)]
    fwd_argmax_ms: Option<f64>,
}

/// One row of benches/torch_lwta.py's output (missing numbers: that variant failed).
#[derive(Deserialize, Debug, Clone)]
struct TorchRow {
    shape: String,
    dtype: String,
    eager_fwd_ms: Option<f64>,
    eager_fwd_bwd_ms: Option<f64>,
    compiled_fwd_ms: Option<f64>,
    compiled_fwd_bwd_ms: Option<f64>,
}

#[derive(Deserialize, Debug)]
struct TorchReport {
    results: Vec<TorchRow>,
}

/// The anchor shapes of `../shared/ANCHORS.md`.
struct Shape {
    name: &'static str,
    geom: BlockGeometry,
    u: usize,
}

fn shapes() -> [Shape; 3] {
    [
        Shape { name: "deit_t_mlp", geom: BlockGeometry::tokens(256 * 197, 768), u: 8 },
        Shape { name: "deit_s_mlp", geom: BlockGeometry::tokens(128 * 197, 1536), u: 12 },
        Shape { name: "resnet18_layer1", geom: BlockGeometry::nchw(256, 64, 56, 56), u: 4 },
    ]
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let side_by_side = args.cpu || args.torch.is_some() || args.no_torch || args.quick || args.json.is_some() || args.check.is_some();
    let device = match (&args.device, side_by_side) {
        // `--report FILE` alone prints either kind of stored result.
        (None, false) => match &args.report {
            Some(path) if read_json::<crate::bench_cpu::CpuReport>(path).is_ok() => "cpu",
            Some(_) => "cuda",
            None => return criterion(),
        },
        (None, true) => "cpu",
        (Some(device), _) if args.cpu && device != "cpu" => bail!("--cpu conflicts with --device {device}"),
        (Some(device), _) => device.as_str(),
    };
    if device == "cpu" {
        return run_cpu(&args);
    }
    let report = match &args.report {
        Some(path) => read_json::<Report>(path)?,
        None => match Device::open(device).with_context(|| format!("--device {device}"))? {
            Device::Cpu => return run_cpu(&args),
            Device::Cuda(gpu) => match gpu.ordinal() {
                Some(ordinal) => measure(ordinal, args.iters, &args.sweep_waves)?,
                None => bail!("--device {device}: bench times real hardware (cpu or cuda:N), not the emulator"),
            },
        },
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    let torch = match args.torch.as_ref().map(|p| p.as_ref().context("--torch: on cuda it takes FILE, a benches/torch_lwta.py result")) {
        Some(Err(err)) => return Err(err),
        Some(Ok(path)) if path.exists() => read_json::<TorchReport>(path)?.results,
        Some(Ok(path)) => {
            println!("(no PyTorch results at {})", path.display());
            Vec::new()
        }
        None => Vec::new(),
    };
    print_table(&report, &torch);
    if let Some(path) = &args.check {
        check(&report, &read_json::<Report>(path)?, args.tolerance.unwrap_or(0.10))?;
    }
    Ok(())
}

fn run_cpu(args: &Args) -> anyhow::Result<()> {
    use crate::bench_cpu::{self, CpuReport, Options, Torch};
    let report = match &args.report {
        Some(path) => read_json::<CpuReport>(path)?,
        None => {
            let torch = match (&args.torch, args.no_torch) {
                (Some(Some(file)), _) => {
                    bail!("--torch {}: on the CPU --torch takes no FILE (it runs benches/torch_cpu.py itself)", file.display())
                }
                (Some(None), _) => Torch::Required,
                (None, true) => Torch::Off,
                (None, false) => Torch::IfAvailable,
            };
            let (rounds, seconds, text_sample) = if args.quick { (2.min(args.rounds), 0.3, 128) } else { (args.rounds, args.seconds, 512) };
            bench_cpu::measure(&Options { rounds, seconds, text_sample, torch, python: args.python.clone() })?
        }
    };
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("\n{}", bench_cpu::table(&report));
    if let Some(path) = &args.check {
        for line in bench_cpu::check(&report, &read_json::<CpuReport>(path)?, args.tolerance.unwrap_or(0.15))? {
            println!("{line}");
        }
    }
    Ok(())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Plain `cargo xtask bench`: the criterion benches, which report on their own.
fn criterion() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(cargo).arg("bench").current_dir(&root).status().context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed");
    }
    Ok(())
}

fn measure(gpu: usize, iters: usize, sweep_waves: &[u32]) -> anyhow::Result<Report> {
    let cuda = LwtaCuda::new(gpu).context("the cuda bench needs a GPU")?;
    let stream = cuda.stream().clone();
    let ctx = stream.context().clone();
    // One stream, no cross-stream hazards: skip cudarc's per-buffer events between launches.
    // SAFETY: every buffer below is used on this one stream only.
    unsafe { ctx.disable_event_tracking() };
    let device = ctx.name().unwrap_or_else(|_| format!("GPU {gpu}"));
    let copy_gbps = copy_bandwidth(&stream, iters)?;
    println!("{device}: device-to-device copy {copy_gbps:.0} GB/s (read + write)");
    let mut results = Vec::new();
    let mut sweep = Vec::new();
    for shape in shapes() {
        let n = shape.geom.len();
        let x = random_normals(0xbe4c, 0, n);
        let dy = random_normals(0xbe4c, 1, n);
        results.push(measure_shape::<f32>(&cuda, &shape, &x, &dy, copy_gbps, iters)?);
        results.push(measure_shape::<bf16>(&cuda, &shape, &x, &dy, copy_gbps, iters)?);
        for &waves in sweep_waves {
            let cuda = cuda.clone().with_waves(waves);
            sweep.push((waves, measure_shape::<f32>(&cuda, &shape, &x, &dy, copy_gbps, iters)?));
            sweep.push((waves, measure_shape::<bf16>(&cuda, &shape, &x, &dy, copy_gbps, iters)?));
        }
    }
    if !sweep.is_empty() {
        println!("grid sweep (×floor): waves shape dtype fwd argmax fwd+bwd");
        for (waves, m) in &sweep {
            println!(
                "{waves:>5} {:<16} {:<5} {:>6.3} {:>6.3} {:>6.3}",
                m.shape,
                m.dtype,
                m.fwd_ms / m.fwd_floor_ms,
                m.fwd_argmax_ms.unwrap_or(f64::NAN) / m.fwd_floor_ms,
                m.fwd_bwd_ms / m.fwd_bwd_floor_ms
            );
        }
    }
    Ok(Report { device, copy_gbps, results })
}

/// Median milliseconds of `iters` timed runs of `work` (after 3 untimed ones), CUDA events.
fn time_ms(stream: &Arc<CudaStream>, iters: usize, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let ctx = stream.context();
    for _ in 0..3 {
        work()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(stream)?;
        work()?;
        end.record(stream)?;
        times.push(f64::from(start.elapsed_ms(&end)?));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Device-to-device copy of 1 GiB, GB/s counting bytes read and written.
fn copy_bandwidth(stream: &Arc<CudaStream>, iters: usize) -> anyhow::Result<f64> {
    let len = 1usize << 28; // f32 elements: 1 GiB
    let src: CudaSlice<f32> = stream.clone_htod(&random_normals(7, 7, len))?;
    let mut dst: CudaSlice<f32> = stream.alloc_zeros(len)?;
    let ms = time_ms(stream, iters, || Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
    Ok(2.0 * (len * 4) as f64 / (ms * 1e-3) / 1e9)
}

fn measure_shape<T: Element>(
    cuda: &LwtaCuda,
    shape: &Shape,
    x: &[f32],
    dy: &[f32],
    copy_gbps: f64,
    iters: usize,
) -> anyhow::Result<Measurement> {
    let stream = cuda.stream();
    let (geom, u) = (shape.geom, shape.u);
    let (n, blocks) = (geom.len(), geom.blocks(u));
    let to_storage = |v: &[f32]| -> Vec<T> { v.iter().map(|&f| T::from_f32(f)).collect() };
    let x_dev: CudaSlice<T> = stream.clone_htod(&to_storage(x))?;
    let dy_dev: CudaSlice<T> = stream.clone_htod(&to_storage(dy))?;
    let mut y_dev: CudaSlice<T> = stream.clone_htod(&to_storage(&vec![f32::NAN; n]))?;
    let mut dx_dev: CudaSlice<T> = stream.clone_htod(&to_storage(&vec![f32::NAN; n]))?;
    let mut w_dev: CudaSlice<u8> = stream.clone_htod(&vec![0xffu8; blocks])?;
    let tau = LwtaConfig::default().tau_train;
    let mut step = 0u64;
    let fwd_ms = time_ms(stream, iters, || {
        step += 1; // a fresh noise stream per call, as training does
        Ok(cuda.forward(&x_dev, &mut y_dev, &mut w_dev, geom, u, Noise::Philox { seed: 1, offset: step })?)
    })?;
    let fwd_argmax_ms = time_ms(stream, iters, || Ok(cuda.forward(&x_dev, &mut y_dev, &mut w_dev, geom, u, Noise::None)?))?;
    let fwd_bwd_ms = time_ms(stream, iters, || {
        step += 1;
        let noise = Noise::Philox { seed: 1, offset: step };
        cuda.forward(&x_dev, &mut y_dev, &mut w_dev, geom, u, noise)?;
        Ok(cuda.backward(&x_dev, &dy_dev, &mut dx_dev, geom, u, tau, noise)?)
    })?;
    // The outputs must have been written (NaN poison gone) for the timing to mean anything.
    let y: Vec<T> = stream.clone_dtoh(&y_dev)?;
    let dx: Vec<T> = stream.clone_dtoh(&dx_dev)?;
    if let Some(i) = y.iter().chain(&dx).position(|v| v.to_f32().is_nan()) {
        bail!("{} {}: element {i} of y/dx was never written", shape.name, T::SUFFIX);
    }
    // Floors as ../shared/ANCHORS.md counts them (the 1 byte per block of winners is left out).
    let tensor_bytes = (T::BYTES as usize * n) as f64;
    let floor_ms = |tensors: f64| tensors * tensor_bytes / (copy_gbps * 1e9) * 1e3;
    Ok(Measurement {
        shape: shape.name.to_string(),
        dtype: T::SUFFIX.to_string(),
        fwd_ms,
        fwd_floor_ms: floor_ms(2.0),
        fwd_bwd_ms,
        fwd_bwd_floor_ms: floor_ms(5.0),
        fwd_argmax_ms: Some(fwd_argmax_ms),
    })
}

fn print_table(report: &Report, torch: &[TorchRow]) {
    println!(
        "\nLWTA kernels on {} (copy {:.0} GB/s); ms, median of CUDA events; ×floor = time / bytes-at-copy-bandwidth",
        report.device, report.copy_gbps
    );
    println!(
        "{:<16} {:<5} {:>8} {:>8} {:>7} {:>7} | {:>8} {:>8} {:>7} | {:>15} {:>15} | {:>13}",
        "shape",
        "dtype",
        "fwd",
        "floor",
        "×floor",
        "argmax",
        "fwd+bwd",
        "floor",
        "×floor",
        "eager fwd/f+b",
        "compile fwd/f+b",
        "× vs compile"
    );
    for m in &report.results {
        let t = torch.iter().find(|t| t.shape == m.shape && t.dtype == m.dtype);
        let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{a:.3}/{b:.3}"),
            _ => "-".to_string(),
        };
        let speedup = match t.and_then(|t| t.compiled_fwd_ms.zip(t.compiled_fwd_bwd_ms)) {
            Some((f, fb)) => format!("{:.1}/{:.1}", f / m.fwd_ms, fb / m.fwd_bwd_ms),
            None => "-".to_string(),
        };
        println!(
            "{:<16} {:<5} {:>8.4} {:>8.4} {:>7.2} {:>7} | {:>8.4} {:>8.4} {:>7.2} | {:>15} {:>15} | {:>13}",
            m.shape,
            m.dtype,
            m.fwd_ms,
            m.fwd_floor_ms,
            m.fwd_ms / m.fwd_floor_ms,
            m.fwd_argmax_ms.map_or("-".to_string(), |a| format!("{:.2}", a / m.fwd_floor_ms)),
            m.fwd_bwd_ms,
            m.fwd_bwd_floor_ms,
            m.fwd_bwd_ms / m.fwd_bwd_floor_ms,
            t.map_or("-".to_string(), |t| pair(t.eager_fwd_ms, t.eager_fwd_bwd_ms)),
            t.map_or("-".to_string(), |t| pair(t.compiled_fwd_ms, t.compiled_fwd_bwd_ms)),
            speedup,
        );
    }
}

/// Fails when any ratio to the floor grew by more than the factor `1 + tolerance` over the baseline.
fn check(report: &Report, baseline: &Report, tolerance: f64) -> anyhow::Result<()> {
    let limit = 1.0 + tolerance;
    let mut slower = Vec::new();
    for m in &report.results {
        let Some(b) = baseline.results.iter().find(|b| b.shape == m.shape && b.dtype == m.dtype) else {
            println!("check: {} {} has no baseline", m.shape, m.dtype);
            continue;
        };
        for (what, now, base) in [
            ("fwd", m.fwd_ms / m.fwd_floor_ms, b.fwd_ms / b.fwd_floor_ms),
            ("fwd+bwd", m.fwd_bwd_ms / m.fwd_bwd_floor_ms, b.fwd_bwd_ms / b.fwd_bwd_floor_ms),
        ] {
            let status = if now > base * limit { "SLOWER" } else { "ok" };
            println!("check {status} {} {} {what}: ×floor {now:.3} vs baseline {base:.3}", m.shape, m.dtype);
            if now > base * limit {
                slower.push(format!("{} {} {what}", m.shape, m.dtype));
            }
        }
    }
    if !slower.is_empty() {
        bail!("more than {:.0}% slower than the baseline: {}", tolerance * 100.0, slower.join(", "));
    }
    Ok(())
}
