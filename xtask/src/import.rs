//! `cargo xtask import FILE --model PRESET [--competitors U] --out RUN [shape flags] [--data DIR]`:
//! a plain PyTorch state dict (safetensors, as timm, torchvision or DISCOVER's code write it) into a
//! run folder that eval, predict, dissect and train --resume accept ([`cvn_models::import`]).

use std::path::PathBuf;

use anyhow::Context;
use cvn_models::import::{import_run, ShapeOverrides};
use cvn_models::train::TrainConfig;
use cvn_models::{ModelConfig, Stem};

#[derive(clap::Args)]
#[command(after_help = "Examples (a .pth pickle converts first: python3 tools/pth_to_safetensors.py model.pth model.safetensors):
  cargo xtask import vit_fmnist_timm.safetensors --model vit-fmnist --competitors 4 --out runs/vit-imported
  cargo xtask import resnet.safetensors --model resnet18 --num-classes 100 --data ~/imagenet100 --out runs/r18")]
pub struct Args {
    /// The state dict: a safetensors file (tools/pth_to_safetensors.py converts .pth pickles).
    file: PathBuf,
    /// Preset the file's model follows (vit-fmnist, deit-tiny, deit-small, deit-base, resnet18,
    /// resnet18-fmnist, vit-concepts, resnet18-concepts).
    #[arg(long, value_name = "PRESET")]
    model: String,
    /// LWTA competitors U the imported network runs with (1 = its GELU/ReLU as trained).
    #[arg(long, value_name = "U", default_value = "1", value_parser = crate::cli::at_least_one)]
    competitors: usize,
    /// New run folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Data folder for fine-tuning and, for a ResNet CVN, the argmax BatchNorm statistics
    /// [default: as `train`: the installed or embedded Fashion-MNIST for 1-channel models].
    #[arg(long, value_name = "DIR", value_parser = crate::cli::existing_dir)]
    data: Option<PathBuf>,
    /// Classes of the classifier [default: the preset's].
    #[arg(long)]
    num_classes: Option<usize>,
    /// Input channels [default: the preset's].
    #[arg(long)]
    in_chans: Option<usize>,
    /// ViT input side in pixels [default: the preset's].
    #[arg(long)]
    img_size: Option<usize>,
    /// ViT patch side in pixels [default: the preset's].
    #[arg(long)]
    patch_size: Option<usize>,
    /// ViT width [default: the preset's].
    #[arg(long)]
    embed_dim: Option<usize>,
    /// ViT blocks [default: the preset's].
    #[arg(long)]
    depth: Option<usize>,
    /// ViT attention heads [default: the preset's].
    #[arg(long)]
    num_heads: Option<usize>,
    /// ResNet channels of layer1..layer4, comma-separated [default: the preset's].
    #[arg(long, value_delimiter = ',')]
    widths: Option<Vec<usize>>,
    /// ResNet stem: imagenet (7×7 stride 2 + max-pool) or small (3×3 stride 1) [default: the preset's].
    #[arg(long, value_parser = ["imagenet", "small"])]
    stem: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let overrides = ShapeOverrides {
        num_classes: args.num_classes,
        in_chans: args.in_chans,
        img_size: args.img_size,
        patch_size: args.patch_size,
        embed_dim: args.embed_dim,
        depth: args.depth,
        num_heads: args.num_heads,
        widths: args.widths.clone(),
        stem: args.stem.as_deref().map(|s| if s == "small" { Stem::Small } else { Stem::Imagenet }),
    };
    let preset = ModelConfig::preset(&args.model, args.competitors)
        .with_context(|| format!("--model {} --competitors {}", args.model, args.competitors))?;
    let config = overrides.apply(preset.clone())?;
    // Fine-tuning settings: the preset's recipe for 10 epochs (train --resume may change any of them).
    let mut train = TrainConfig::for_model(&args.model, args.competitors, 10)?;
    train.architecture = (config != preset).then_some(config);
    train.data_dir.clone_from(&args.data);
    let imported = import_run(&args.file, &args.out, train).with_context(|| format!("importing {}", args.file.display()))?;
    for note in &imported.notes {
        println!("{note}");
    }
    println!("model: {} (loads with load_state_dict(strict=True) in timm/torchvision)", imported.model_file.display());
    if let Some((path, images)) = &imported.argmax_bn {
        println!("argmax BatchNorm statistics of the deterministic pass: {} ({images} training images)", path.display());
    }
    println!(
        "next: cargo xtask eval --run {0}; cargo xtask predict --run {0} --out predictions.csv; cargo xtask train --resume --out {0} --epochs N (fine-tuning)",
        args.out.display()
    );
    Ok(())
}
