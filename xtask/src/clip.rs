//! `cargo xtask clip`: zero-shot image–text probabilities from a Hugging Face CLIP directory — a
//! smoke test a user can run on real weights.

use std::path::PathBuf;

use anyhow::Context;
use clip_encoder::Clip;

#[derive(clap::Args)]
#[command(after_help = "Example: cargo xtask clip --clip weights/clip-vit-base-patch16 --image dog.jpg --text \"a dog\" --text \"a cat\"")]
pub struct Args {
    /// Directory holding config.json, model.safetensors and tokenizer.json of a Hugging Face CLIP
    /// repository (e.g. openai/clip-vit-base-patch16), as `dissect --clip` takes it.
    #[arg(long, value_name = "DIR", alias = "model", value_parser = crate::cli::existing_dir)]
    clip: PathBuf,
    /// An image file (JPEG or PNG); repeat for several.
    #[arg(long = "image", value_name = "FILE", required = true)]
    images: Vec<PathBuf>,
    /// A candidate caption; repeat for several.
    #[arg(long = "text", value_name = "TEXT", required = true)]
    texts: Vec<String>,
    /// Print JSON (probabilities and both sets of embeddings) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: crate::device::DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let clip = Clip::load_on(&args.clip, &device, args.device.dtype()).with_context(|| format!("--clip {}", args.clip.display()))?;
    let image_embeds = clip.encode_image_files(&args.images).context("--image")?;
    let text_embeds = clip.encode_texts(&args.texts).context("--text")?;
    let probabilities = clip.zero_shot(&image_embeds, &text_embeds)?;
    let rows = |t: &cvn_autograd::Tensor| -> anyhow::Result<Vec<Vec<f32>>> {
        let width = t.shape().last().copied().unwrap_or(1).max(1);
        Ok(t.to_vec()?.chunks(width).map(<[f32]>::to_vec).collect())
    };
    let probabilities = rows(&probabilities)?;
    let image_names: Vec<String> = args.images.iter().map(|p| p.display().to_string()).collect();
    if args.json {
        let out = JsonOutput {
            model: args.clip.display().to_string(),
            logit_scale: clip.model.logit_scale()?,
            images: image_names,
            texts: args.texts,
            probabilities,
            image_embeds: rows(&image_embeds)?,
            text_embeds: rows(&text_embeds)?,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_table(&image_names, &args.texts, &probabilities);
    Ok(())
}

/// `--json` output; `probabilities[i][j]` is image `i` against text `j`, embeddings are L2-normalised.
#[derive(serde::Serialize)]
struct JsonOutput {
    model: String,
    logit_scale: f32,
    images: Vec<String>,
    texts: Vec<String>,
    probabilities: Vec<Vec<f32>>,
    image_embeds: Vec<Vec<f32>>,
    text_embeds: Vec<Vec<f32>>,
}

/// Images down, texts across, probabilities in percent; `*` marks each image's best text.
fn print_table(images: &[String], texts: &[String], probabilities: &[Vec<f32>]) {
    let first = images.iter().map(String::len).max().unwrap_or(5).max(5);
    let widths: Vec<usize> = texts.iter().map(|t| t.chars().count().max(8)).collect();
    let mut header = format!("{:first$}", "image");
    for (t, w) in texts.iter().zip(&widths) {
        header.push_str(&format!("  {t:>w$}"));
    }
    println!("{header}");
    for (name, row) in images.iter().zip(probabilities) {
        let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
        let mut line = format!("{name:first$}");
        for (i, (p, w)) in row.iter().zip(&widths).enumerate() {
            let cell = format!("{}{:.2}%", if Some(i) == best { "*" } else { "" }, p * 100.0);
            line.push_str(&format!("  {cell:>w$}"));
        }
        println!("{line}");
    }
}
