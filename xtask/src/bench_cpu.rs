//! `cargo xtask bench` on the CPU: our workloads in this process and PyTorch's
//! (`benches/torch_cpu.py`, a JSON-lines server in a subprocess) alternating workload by workload
//! for several rounds, medians per side, one table of ours, PyTorch and the speed ratio
//! (PyTorch's time ÷ ours: above 1 = ours faster), with the machine it ran on.
//!
//! The workloads are issue 19's: a training step (forward, label-smoothed cross-entropy, backward,
//! AdamW) of `vit-fmnist` (batch 128) and `resnet18-fmnist` (batch 64), CVN U=4 and conventional;
//! the CLIP ViT-B/16 image tower (batch 8) and text tower (an evenly spaced sample of the 20k
//! concept set), random weights; soft-WPMI at N 10,000 × M 5,000 × K 256; LWTA U=4 against
//! GELU / ReLU on tokens 128×50×384 and NCHW 128×16×28×28, forward (recorded on a tape) and forward +
//! backward, through the tensor ops on both sides. Every size is set here and sent to the script.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clip_encoder::{ClipConfig, ClipModel, ClipTokenizer, TEXT_BATCH};
use cvn_autograd::gradcheck::test_values;
use cvn_autograd::optim::{AdamW, Optimizer};
use cvn_autograd::{LwtaLayout, Noise, Tape, Tensor};
use cvn_models::{Forward, Model};
use dissect::similarity::{soft_wpmi, SoftWpmiParams};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How the PyTorch side takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Torch {
    /// Run it when `torch` imports; otherwise say so and print ours alone.
    IfAvailable,
    /// Fail when it does not import (`--torch`).
    Required,
    /// Ours alone (`--no-torch`).
    Off,
}

pub struct Options {
    pub rounds: usize,
    /// Timed calls per measurement run until at least this long (and at least `MIN_ITERS` calls).
    pub seconds: f64,
    /// Concepts of the 20k set the text tower encodes per call.
    pub text_sample: usize,
    pub torch: Torch,
    pub python: String,
}

const MIN_ITERS: usize = 3;
const WARMUP: usize = 1;
const CLIP_CONFIG: &str = r#"{"vision_config": {"patch_size": 16}}"#;
const LR: f32 = 1e-3;
const WEIGHT_DECAY: f32 = 0.05;
const LABEL_SMOOTHING: f32 = 0.1;
const TAU: f32 = 1.67;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Machine {
    /// `lscpu`'s model name.
    pub model: String,
    /// The SIMD flags of `/proc/cpuinfo` that matter to the kernels.
    pub simd: Vec<String>,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and ended.
    pub load_start: String,
    pub load_end: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub work: String,
    pub ours: String,
    pub pytorch: String,
    /// `images/s`, `concepts/s` (items per call ÷ time), `s` or `ms` per call.
    pub unit: String,
    pub items: f64,
    pub ours_s: f64,
    pub pytorch_s: Option<f64>,
    /// The issue's target for the speed ratio.
    pub target: Option<f64>,
}

impl Row {
    /// PyTorch's time ÷ ours (above 1: ours is faster).
    pub fn ratio(&self) -> Option<f64> {
        self.pytorch_s.map(|t| t / self.ours_s)
    }

    fn show(&self, seconds: f64) -> String {
        match self.unit.as_str() {
            "ms" => format!("{:.3} ms", seconds * 1e3),
            "s" => format!("{seconds:.3} s"),
            unit => format!("{:.1} {unit}", self.items / seconds),
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CpuReport {
    pub machine: Machine,
    /// PyTorch's version, when it ran.
    pub torch: Option<String>,
    /// Our rayon threads; PyTorch got as many (`torch.set_num_threads`).
    pub threads: usize,
    pub rounds: usize,
    pub rows: Vec<Row>,
}

/// One workload on both sides: our closure and the request the script answers.
struct Work {
    ours: Box<dyn FnMut() -> anyhow::Result<()>>,
    request: Value,
}

/// A table row: which works it compares.
struct RowSpec {
    work: &'static str,
    ours: &'static str,
    pytorch: &'static str,
    unit: &'static str,
    items: f64,
    ours_work: usize,
    torch_work: usize,
    target: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median seconds per call: `WARMUP` untimed calls, then calls until `MIN_ITERS` and `seconds`.
fn time(f: &mut dyn FnMut() -> anyhow::Result<()>, seconds: f64) -> anyhow::Result<f64> {
    for _ in 0..WARMUP {
        f()?;
    }
    let (mut times, start) = (Vec::new(), Instant::now());
    while times.len() < MIN_ITERS || start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(median(times))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn train_work(preset: &str, u: usize, batch: usize) -> anyhow::Result<Work> {
    let mut model = Model::preset(preset, u, 0)?;
    let config: Value = serde_json::from_str(&model.config().to_json())?;
    let mut opt = AdamW::new(WEIGHT_DECAY);
    let images = Tensor::from_vec(test_values(batch * 784, 1), &[batch, 1, 28, 28])?;
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut step = 0;
    let ours = move || -> anyhow::Result<()> {
        step += 1;
        let tape = Tape::new();
        let x = images.traced(&tape);
        let loss = model.forward(&x, &mut Forward::train(7, step))?.cross_entropy(&labels, LABEL_SMOOTHING)?;
        let grads = loss.backward()?;
        for (name, param, decay) in model.params_mut().trainable_mut() {
            if let Some(g) = grads.get(param) {
                opt.update(name, param, g, LR, decay)?;
            }
        }
        Ok(())
    };
    let request = json!({"kind": "train_step", "config": config, "input": [1, 28, 28], "batch": batch,
        "lr": LR, "weight_decay": WEIGHT_DECAY, "label_smoothing": LABEL_SMOOTHING});
    Ok(Work { ours: Box::new(ours), request })
}

fn activation_work(op: &'static str, layout: LwtaLayout, shape: &[usize], backward: bool) -> anyhow::Result<Work> {
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(test_values(n, 1).iter().map(|v| 2.0 * v).collect(), shape)?;
    let dy = Tensor::from_vec(test_values(n, 2).iter().map(|v| 2.0 * v).collect(), shape)?;
    let mut offset = 0;
    let ours = move || -> anyhow::Result<()> {
        offset += 1;
        let tape = Tape::new();
        // A leaf that requires grad, so the op is recorded and backward runs (as x.requires_grad_ in PyTorch).
        let xt = x.requiring_grad().traced(&tape);
        let y = match op {
            "lwta" => xt.lwta(layout, 4, TAU, Noise::Philox { seed: 7, offset }, "bench")?.0,
            "gelu" => xt.gelu()?,
            _ => xt.relu()?,
        };
        if backward {
            y.backward_with(&dy)?;
        }
        Ok(())
    };
    let layout_name = if layout == LwtaLayout::Tokens { "tokens" } else { "nchw" };
    let request = json!({"kind": "activation", "op": op, "layout": layout_name, "shape": shape, "u": 4, "tau": TAU, "backward": backward});
    Ok(Work { ours: Box::new(ours), request })
}

/// Uniform values in `[lo, hi)`, deterministic.
fn uniform(rows: usize, cols: usize, lo: f32, hi: f32, seed: u64) -> anyhow::Result<Array2<f32>> {
    let values = test_values(rows * cols, seed).iter().map(|v| lo + (hi - lo) * (v + 1.0) / 2.0).collect();
    Ok(Array2::from_shape_vec((rows, cols), values)?)
}

/// The works and the rows of the table.
fn workloads(opts: &Options) -> anyhow::Result<(Vec<Work>, Vec<RowSpec>)> {
    let mut works = vec![
        train_work("vit-fmnist", 4, 128)?,
        train_work("vit-fmnist", 1, 128)?,
        train_work("resnet18-fmnist", 4, 64)?,
        train_work("resnet18-fmnist", 1, 64)?,
    ];
    let clip_config = ClipConfig::from_json(CLIP_CONFIG, Path::new("the CLIP ViT-B/16 config"))?;
    let clip = std::rc::Rc::new(ClipModel::random(clip_config, 0)?);
    let s = 224;
    let pixels = Tensor::from_vec(test_values(8 * 3 * s * s, 7), &[8, 3, s, s])?;
    let model = clip.clone();
    works.push(Work {
        ours: Box::new(move || {
            model.image_features(&pixels)?;
            Ok(())
        }),
        request: json!({"kind": "clip_image", "clip_config": serde_json::from_str::<Value>(CLIP_CONFIG)?, "batch": 8}),
    });
    let tokenizer_file = root().join("tests/fixtures/clip_tokenizer/tokenizer.json");
    let tokenizer = ClipTokenizer::from_file(&tokenizer_file, clip.text_model.context_length())?;
    let concepts_file = root().join("crates/dissect/concepts/20k.txt");
    let concepts = std::fs::read_to_string(&concepts_file).with_context(|| format!("reading {}", concepts_file.display()))?;
    let concepts: Vec<&str> = concepts.lines().filter(|l| !l.trim().is_empty()).collect();
    let sample: Vec<&str> = concepts.iter().step_by((concepts.len() / opts.text_sample).max(1)).take(opts.text_sample).copied().collect();
    let ids = tokenizer.encode_batch(&sample)?;
    let request =
        json!({"kind": "clip_text", "clip_config": serde_json::from_str::<Value>(CLIP_CONFIG)?, "ids": ids, "text_batch": TEXT_BATCH});
    works.push(Work {
        ours: Box::new(move || {
            clip.encode_token_ids(&ids)?;
            Ok(())
        }),
        request,
    });
    let (images, concepts_m, neurons) = (10_000, 5_000, 256);
    let clip_sim = uniform(images, concepts_m, 0.1, 0.35, 11)?;
    let target = uniform(images, neurons, -1.0, 3.0, 12)?;
    let p = SoftWpmiParams::default();
    let request = json!({"kind": "soft_wpmi", "images": images, "concepts": concepts_m, "neurons": neurons, "top_k": p.top_k,
        "a": p.a, "lam": p.lam, "min_prob": p.min_prob, "p_start": p.p_start, "p_end": p.p_end});
    works.push(Work {
        ours: Box::new(move || {
            soft_wpmi(clip_sim.view(), target.view(), &p)?;
            Ok(())
        }),
        request,
    });
    let tokens = [128usize, 50, 384];
    let nchw = [128usize, 16, 28, 28];
    for (layout, shape, conventional) in [(LwtaLayout::Tokens, &tokens[..], "gelu"), (LwtaLayout::Nchw, &nchw[..], "relu")] {
        for backward in [false, true] {
            works.push(activation_work("lwta", layout, shape, backward)?);
            works.push(activation_work(conventional, layout, shape, backward)?);
        }
    }
    let t = opts.text_sample as f64;
    let row = |work, ours, pytorch, unit, items, ours_work, torch_work, target| RowSpec {
        work,
        ours,
        pytorch,
        unit,
        items,
        ours_work,
        torch_work,
        target,
    };
    let rows = vec![
        row("vit-fmnist train step b128", "CVN U=4", "GELU ViT (timm)", "images/s", 128.0, 0, 1, Some(1.0)),
        row("vit-fmnist train step b128", "CVN U=4", "DISCOVER CVN U=4", "images/s", 128.0, 0, 0, None),
        row("vit-fmnist train step b128", "GELU", "GELU ViT (timm)", "images/s", 128.0, 1, 1, None),
        row("resnet18-fmnist train step b64", "CVN U=4", "ReLU ResNet (torchvision)", "images/s", 64.0, 2, 3, Some(1.0)),
        row("resnet18-fmnist train step b64", "CVN U=4", "DISCOVER CVN U=4", "images/s", 64.0, 2, 2, None),
        row("resnet18-fmnist train step b64", "ReLU", "ReLU ResNet (torchvision)", "images/s", 64.0, 3, 3, None),
        row("CLIP ViT-B/16 image tower b8", "clip-encoder", "transformers", "images/s", 8.0, 4, 4, Some(1.0)),
        row("CLIP ViT-B/16 text tower", "clip-encoder", "transformers", "concepts/s", t, 5, 5, Some(1.0)),
        row("soft-WPMI N10000 M5000 K256", "dissect", "CLIP-Dissect", "s", 1.0, 6, 6, Some(10.0)),
        row("LWTA tokens 128x50x384 U=4 fwd", "LWTA", "GELU", "ms", 1.0, 7, 8, None),
        row("LWTA tokens 128x50x384 U=4 fwd", "LWTA", "DISCOVER LWTA", "ms", 1.0, 7, 7, None),
        row("LWTA tokens 128x50x384 U=4 fwd+bwd", "LWTA", "GELU", "ms", 1.0, 9, 10, Some(1.0 / 1.2)),
        row("LWTA tokens 128x50x384 U=4 fwd+bwd", "LWTA", "DISCOVER LWTA", "ms", 1.0, 9, 9, None),
        row("GELU tokens 128x50x384 fwd+bwd", "GELU", "GELU", "ms", 1.0, 10, 10, None),
        row("LWTA NCHW 128x16x28x28 U=4 fwd", "LWTA", "ReLU", "ms", 1.0, 11, 12, None),
        row("LWTA NCHW 128x16x28x28 U=4 fwd", "LWTA", "DISCOVER LWTA", "ms", 1.0, 11, 11, None),
        row("LWTA NCHW 128x16x28x28 U=4 fwd+bwd", "LWTA", "ReLU", "ms", 1.0, 13, 14, Some(0.5)),
        row("LWTA NCHW 128x16x28x28 U=4 fwd+bwd", "LWTA", "DISCOVER LWTA", "ms", 1.0, 13, 13, None),
        row("ReLU NCHW 128x16x28x28 fwd+bwd", "ReLU", "ReLU", "ms", 1.0, 14, 14, None),
    ];
    Ok((works, rows))
}

/// The PyTorch server.
struct TorchServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TorchServer {
    fn start(python: &str, threads: usize) -> anyhow::Result<(Self, String)> {
        let script = root().join("benches/torch_cpu.py");
        let mut child = Command::new(python)
            .arg(&script)
            .args(["--threads", &threads.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("--python {python}: cannot start it"))?;
        let stdin = child.stdin.take().context("the script's stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("the script's stdout")?);
        let mut server = Self { child, stdin, stdout };
        let hello = server.ask(&json!({"kind": "hello"})).with_context(|| {
            format!(
                "--torch: PyTorch is not importable by `{python}` (its error is above); install it with \
                 `{python} -m pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu` and \
                 `{python} -m pip install timm transformers`, or pick another interpreter with --python PATH"
            )
        })?;
        Ok((server, hello["torch"].as_str().unwrap_or("?").to_string()))
    }

    fn ask(&mut self, request: &Value) -> anyhow::Result<Value> {
        writeln!(self.stdin, "{request}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("benches/torch_cpu.py exited");
        }
        let reply: Value = serde_json::from_str(&line).with_context(|| format!("benches/torch_cpu.py answered {line:?}"))?;
        if reply["ok"] != json!(true) {
            bail!("benches/torch_cpu.py: {}", reply["error"]);
        }
        Ok(reply)
    }
}

impl Drop for TorchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn machine(load_start: String) -> Machine {
    let lscpu = Command::new("lscpu").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    let field = |name: &str| lscpu.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()));
    let flags = field("Flags:").unwrap_or_default();
    let wanted = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"];
    Machine {
        model: field("Model name:").unwrap_or_else(|| "unknown (no lscpu)".into()),
        simd: flags.split_whitespace().filter(|f| wanted.contains(f)).map(String::from).collect(),
        load_start,
        load_end: load_average(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

pub fn measure(opts: &Options) -> anyhow::Result<CpuReport> {
    let load_start = load_average();
    let threads = rayon::current_num_threads();
    let mut server = match opts.torch {
        Torch::Off => None,
        torch => match TorchServer::start(&opts.python, threads) {
            Ok(s) => Some(s),
            Err(err) if torch == Torch::IfAvailable => {
                println!("{err:#}\n(printing ours alone; --torch makes this an error, --no-torch skips PyTorch)");
                None
            }
            Err(err) => return Err(err),
        },
    };
    let version = server.as_mut().map(|s| s.1.clone());
    let (mut works, specs) = workloads(opts)?;
    let (mut ours, mut torch) = (vec![Vec::new(); works.len()], vec![Vec::new(); works.len()]);
    for round in 1..=opts.rounds {
        for (i, work) in works.iter_mut().enumerate() {
            ours[i].push(time(&mut work.ours, opts.seconds)?);
            if let Some((s, _)) = server.as_mut() {
                let mut request = work.request.clone();
                request["warmup"] = json!(WARMUP);
                request["min_iters"] = json!(MIN_ITERS);
                request["seconds"] = json!(opts.seconds);
                let reply = s.ask(&request).with_context(|| format!("request {}", work.request["kind"]))?;
                torch[i].push(reply["median_s"].as_f64().context("median_s")?);
            }
        }
        println!("round {round}/{} done (load {})", opts.rounds, load_average());
    }
    let rows = specs
        .iter()
        .map(|r| Row {
            work: r.work.into(),
            ours: r.ours.into(),
            pytorch: r.pytorch.into(),
            unit: r.unit.into(),
            items: r.items,
            ours_s: median(ours[r.ours_work].clone()),
            pytorch_s: (!torch[r.torch_work].is_empty()).then(|| median(torch[r.torch_work].clone())),
            target: r.target,
        })
        .collect();
    Ok(CpuReport { machine: machine(load_start), torch: version, threads, rounds: opts.rounds, rows })
}

/// The table, as printed and as the README shows it (Markdown).
pub fn table(report: &CpuReport) -> String {
    let m = &report.machine;
    let mut out = format!(
        "CPU bench on {} ({}), {} threads, PyTorch {}, medians of {} alternating rounds, load {} → {}\n\n",
        m.model,
        m.simd.join(" "),
        report.threads,
        report.torch.as_deref().unwrap_or("not run"),
        report.rounds,
        m.load_start,
        m.load_end
    );
    out.push_str("| work | ours | PyTorch | speed ratio (PyTorch time ÷ ours) | target |\n| --- | --- | --- | --- | --- |\n");
    for r in &report.rows {
        let ratio = r.ratio().map_or("-".into(), |q| format!("{q:.2}"));
        let target = match (r.target, r.ratio()) {
            (Some(t), Some(q)) => format!("≥ {t:.2} {}", if q >= t { "met" } else { "not met" }),
            (Some(t), None) => format!("≥ {t:.2}"),
            _ => String::new(),
        };
        let torch = r.pytorch_s.map_or("-".into(), |t| format!("{} {}", r.pytorch, r.show(t)));
        out.push_str(&format!("| {} | {} {} | {torch} | {ratio} | {target} |\n", r.work, r.ours, r.show(r.ours_s)));
    }
    out
}

/// Fails when a speed ratio fell by more than the factor `1 + tolerance` below the baseline's.
pub fn check(report: &CpuReport, baseline: &CpuReport, tolerance: f64) -> anyhow::Result<Vec<String>> {
    let (mut lines, mut slower) = (Vec::new(), Vec::new());
    for r in &report.rows {
        let key = format!("{}: {} vs {}", r.work, r.ours, r.pytorch);
        let base = baseline.rows.iter().find(|b| b.work == r.work && b.ours == r.ours && b.pytorch == r.pytorch).and_then(Row::ratio);
        match (r.ratio(), base) {
            (Some(now), Some(base)) => {
                let bad = now * (1.0 + tolerance) < base;
                lines.push(format!("check {} {key}: ratio {now:.3} vs baseline {base:.3}", if bad { "SLOWER" } else { "ok" }));
                if bad {
                    slower.push(key);
                }
            }
            _ => lines.push(format!("check {key}: no ratio in this run or the baseline")),
        }
    }
    if !slower.is_empty() {
        bail!("{}\nratios more than {:.0}% below the baseline: {}", lines.join("\n"), tolerance * 100.0, slower.join("; "));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(torch_s: &[Option<f64>]) -> CpuReport {
        let rows = torch_s
            .iter()
            .enumerate()
            .map(|(i, &t)| Row {
                work: format!("work {i}"),
                ours: "ours".into(),
                pytorch: "torch".into(),
                unit: if i == 0 { "images/s".into() } else { "ms".into() },
                items: 128.0,
                ours_s: 0.5,
                pytorch_s: t,
                target: Some(1.0),
            })
            .collect();
        let machine = Machine { model: "Test CPU".into(), simd: vec!["avx2".into()], load_start: "0.1".into(), load_end: "0.2".into() };
        CpuReport { machine, torch: Some("2.x".into()), threads: 2, rounds: 3, rows }
    }

    #[test]
    fn ratios_units_and_targets_in_the_table() {
        let r = report(&[Some(1.0), Some(0.25), None]);
        assert_eq!(r.rows[0].ratio(), Some(2.0));
        let text = table(&r);
        assert!(text.contains("Test CPU (avx2), 2 threads, PyTorch 2.x, medians of 3"), "{text}");
        assert!(text.contains("| work 0 | ours 256.0 images/s | torch 128.0 images/s | 2.00 | ≥ 1.00 met |"), "{text}");
        assert!(text.contains("| work 1 | ours 500.000 ms | torch 250.000 ms | 0.50 | ≥ 1.00 not met |"), "{text}");
        assert!(text.contains("| work 2 | ours 500.000 ms | - | - | ≥ 1.00 |"), "{text}");
        assert_eq!(median(vec![3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn check_fails_only_beyond_the_tolerance() {
        let base = report(&[Some(1.0), Some(1.0), None]);
        // Ratio 2.0 → 1.8: within the default 15%.
        let now = report(&[Some(0.9), Some(1.0), Some(1.0)]);
        let lines = check(&now, &base, 0.15).unwrap();
        assert!(lines[0].starts_with("check ok work 0") && lines[2].contains("no ratio"), "{lines:?}");
        // Ratio 2.0 → 1.6: more than 15% slower.
        let err = check(&report(&[Some(0.8), Some(1.0), None]), &base, 0.15).unwrap_err().to_string();
        assert!(err.contains("check SLOWER work 0") && err.contains("below the baseline: work 0: ours vs torch"), "{err}");
    }
}
