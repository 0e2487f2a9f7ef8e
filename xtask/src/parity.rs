//! `cargo xtask parity [--device cpu|cuda] [--fixtures DIR]`: one line per check,
//! `PASS|FAIL <name> max_rel_err=<x>`, exit 1 on any FAIL.
//!
//! * `cpu`: every library crate's `parity_checks` against the reference fixtures in DIR (default:
//!   the repository's `tests/fixtures`).
//! * `cuda`: the LWTA PTX kernels against the CPU reference on fresh random inputs
//!   ([`lwta_kernels::cuda::parity`]), then the conformance suite of cvn-autograd's CUDA backend
//!   (every op, forward and backward, f32 and bf16, against its float64 reference).
//! * `cuda-emulated`: the conformance suite on the emulated CUDA device (the same kernels on the
//!   PTX interpreter; no GPU needed).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use cvn_autograd::Device;
use lwta_kernels::cuda::{parity::gpu_checks, LwtaCuda};
use lwta_kernels::parity::Check;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  cargo xtask parity\n  cargo xtask parity --device cuda-emulated --quiet")]
pub struct Args {
    /// Where the implementation under test runs: cpu (the reference fixtures), cuda / cuda:N (the
    /// LWTA kernels and the conformance suite on that GPU) or cuda-emulated (the suite on the PTX
    /// emulator).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Reference fixtures (cpu) [default: the repository's tests/fixtures].
    #[arg(long, value_name = "DIR", value_parser = crate::cli::existing_dir)]
    fixtures: Option<PathBuf>,
    /// Seed of the random inputs and noise streams (cuda).
    #[arg(long, default_value_t = 0x1f0a_2b3c_4d5e)]
    seed: u64,
    /// Print only failing checks and the summary.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = Device::open(&args.device).with_context(|| format!("--device {}", args.device))?;
    let checks = match &device {
        Device::Cpu => {
            let fixtures = match args.fixtures {
                Some(dir) => dir,
                None => repo_path("tests/fixtures").context("cannot find the repository's tests/fixtures; pass --fixtures DIR")?,
            };
            cpu_checks(&fixtures)?
        }
        Device::Cuda(gpu) => match gpu.ordinal() {
            Some(ordinal) => {
                let cuda = LwtaCuda::new(ordinal).context("the cuda parity checks need a GPU")?;
                let mut checks = gpu_checks(&cuda, args.seed)?;
                checks.extend(conformance(&device));
                checks
            }
            // The LWTA kernels' own parity runs on the emulator in `cargo test` (emulated_ptx.rs).
            None => conformance(&device),
        },
    };
    let failed = checks.iter().filter(|c| !c.passed).count();
    for check in &checks {
        if !(args.quiet && check.passed) {
            print_check(check);
        }
    }
    println!("{} passed, {} failed", checks.len() - failed, failed);
    if failed > 0 {
        bail!("{failed} parity check(s) failed");
    }
    Ok(())
}

/// cvn-autograd's conformance suite on `device`, as parity checks (`error / tolerance` ≤ 1 passes).
fn conformance(device: &Device) -> Vec<Check> {
    cvn_autograd::conformance::run(device)
        .into_iter()
        .map(|o| Check {
            name: format!("conformance {device} {}", o.case),
            max_rel_err: o.worst,
            tolerance: 1.0,
            passed: o.passed,
            detail: if o.passed { String::new() } else { o.detail },
        })
        .collect()
}

fn print_check(check: &Check) {
    let status = if check.passed { "PASS" } else { "FAIL" };
    if check.detail.is_empty() {
        println!("{status} {} max_rel_err={:.3e}", check.name, check.max_rel_err);
    } else {
        println!("{status} {} max_rel_err={:.3e} ({})", check.name, check.max_rel_err, check.detail);
    }
}

/// Every crate that owns reference fixtures checks itself against them.
fn cpu_checks(fixtures: &Path) -> anyhow::Result<Vec<Check>> {
    if !fixtures.is_dir() {
        bail!("fixtures directory {} does not exist", fixtures.display());
    }
    let mut checks = lwta_kernels::parity_checks(fixtures).context("lwta-kernels parity")?;
    checks.extend(cvn_models::parity_checks(fixtures).context("cvn-models parity")?);
    checks.extend(clip_encoder::parity_checks(fixtures).context("clip-encoder parity")?);
    checks.extend(dissect::parity_checks(fixtures).context("dissect parity")?);
    Ok(checks)
}

/// A path of the repository, found from where this binary was built (a checkout) or from where it
/// sits (a copied bundle: `<dir>/xtask` next to `<dir>/<path>`), whichever exists.
pub fn repo_path(relative: &str) -> Option<PathBuf> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    let beside = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(relative)));
    [Some(built), beside].into_iter().flatten().find(|p| p.exists())
}
