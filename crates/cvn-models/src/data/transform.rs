//! Image transforms: normalisation, small-image augmentation (random crop with padding, flip) and
//! the ImageNet-style crops (RandomResizedCrop for training, resize + centre crop for evaluation).
//! All randomness comes from the sample's [`CounterRng`].

use image::imageops::{self, FilterType};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{config_err, Result};
use crate::rng::CounterRng;

/// Per-channel `(x / 255 - mean) / std`, as torchvision's `ToTensor` + `Normalize`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return config_err("normalisation", format!("{} means for {} standard deviations", mean.len(), std.len()));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return config_err("normalisation", format!("standard deviation {s} must be finite and > 0"));
        }
        Ok(Self { mean, std })
    }

    /// Fashion-MNIST training-set statistics.
    pub fn fashion_mnist() -> Self {
        Self { mean: vec![0.2860], std: vec![0.3530] }
    }

    /// ImageNet RGB statistics (timm/torchvision defaults).
    pub fn imagenet() -> Self {
        Self { mean: vec![0.485, 0.456, 0.406], std: vec![0.229, 0.224, 0.225] }
    }

    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// `scale` and `shift` with `normalised = byte * scale + shift` for channel `c`.
    fn affine(&self, c: usize) -> (f32, f32) {
        let scale = 1.0 / (255.0 * self.std[c]);
        (scale, -self.mean[c] / self.std[c])
    }
}

/// Small-image augmentation: a random `size × size` crop of the image zero-padded by `pad` on every
/// side (torchvision `RandomCrop(size, padding=pad)`), then a horizontal flip with probability ½.
/// `pad = 0, flip = false` is the identity (evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PadCropFlip {
    pub pad: usize,
    pub flip: bool,
}

impl PadCropFlip {
    /// Writes the augmented, normalised image `src` (u8, CHW with `shape = [C, H, W]`) into `out`.
    pub fn apply(&self, src: &[u8], shape: [usize; 3], norm: &Normalize, rng: &mut CounterRng, out: &mut [f32]) {
        let [channels, h, w] = shape;
        let (dy, dx) = if self.pad > 0 {
            (rng.below(2 * self.pad + 1) as isize - self.pad as isize, rng.below(2 * self.pad + 1) as isize - self.pad as isize)
        } else {
            (0, 0)
        };
        let flip = self.flip && rng.coin();
        for c in 0..channels {
            let (scale, shift) = norm.affine(c);
            let plane = &src[c * h * w..(c + 1) * h * w];
            let out_plane = &mut out[c * h * w..(c + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + dy;
                for x in 0..w {
                    let xx = if flip { w - 1 - x } else { x };
                    let sx = xx as isize + dx;
                    let inside = (0..h as isize).contains(&sy) && (0..w as isize).contains(&sx);
                    let byte = if inside { plane[sy as usize * w + sx as usize] } else { 0 };
                    out_plane[y * w + x] = byte as f32 * scale + shift;
                }
            }
        }
    }
}

/// Crops for full-size images (ImageFolder): RandomResizedCrop + flip to train, resize + centre crop
/// to evaluate, both producing `size × size` RGB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum FolderTransform {
    /// torchvision `RandomResizedCrop(size, scale, ratio)` (bilinear) then `RandomHorizontalFlip`.
    Train { size: usize, scale: (f32, f32), ratio: (f32, f32), flip: bool },
    /// Resize the shorter side to `resize` (bilinear), then crop the central `size × size`.
    Eval { resize: usize, size: usize },
}

impl FolderTransform {
    /// The standard training crop: scale (0.08, 1), ratio (3/4, 4/3), flip.
    pub fn train(size: usize) -> Self {
        Self::Train { size, scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0), flip: true }
    }

    /// The standard evaluation crop: resize to `size / 0.875` (256 for 224), centre crop.
    pub fn eval(size: usize) -> Self {
        Self::Eval { resize: (size as f32 / 0.875).round() as usize, size }
    }

    pub fn size(&self) -> usize {
        match *self {
            Self::Train { size, .. } | Self::Eval { size, .. } => size,
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            Self::Train { size, scale, ratio, .. } => {
                if size == 0 || !(0.0 < scale.0 && scale.0 <= scale.1 && scale.1 <= 1.0) || !(0.0 < ratio.0 && ratio.0 <= ratio.1) {
                    return config_err(
                        "RandomResizedCrop",
                        format!("need size > 0, 0 < scale.0 <= scale.1 <= 1, 0 < ratio.0 <= ratio.1; got size {size}, scale {scale:?}, ratio {ratio:?}"),
                    );
                }
            }
            Self::Eval { resize, size } => {
                if size == 0 || resize < size {
                    return config_err("resize + centre crop", format!("need 0 < size <= resize, got size {size}, resize {resize}"));
                }
            }
        }
        Ok(())
    }

    /// Applies the transform and normalisation, writing `3 × size × size` floats (CHW) into `out`.
    pub fn apply(&self, img: &RgbImage, norm: &Normalize, rng: &mut CounterRng, out: &mut [f32]) {
        let prepared = match *self {
            Self::Train { size, scale, ratio, flip } => {
                let (x, y, w, h) = random_resized_crop_box(img.width(), img.height(), scale, ratio, rng);
                let crop = imageops::crop_imm(img, x, y, w, h).to_image();
                let mut resized = imageops::resize(&crop, size as u32, size as u32, FilterType::Triangle);
                if flip && rng.coin() {
                    imageops::flip_horizontal_in_place(&mut resized);
                }
                resized
            }
            Self::Eval { resize, size } => {
                let (w, h) = (img.width() as usize, img.height() as usize);
                let (nw, nh) = if w <= h { (resize, resize * h / w) } else { (resize * w / h, resize) };
                let resized = imageops::resize(img, nw as u32, nh as u32, FilterType::Triangle);
                let x = ((nw - size) as f32 / 2.0).round() as u32;
                let y = ((nh - size) as f32 / 2.0).round() as u32;
                imageops::crop_imm(&resized, x, y, size as u32, size as u32).to_image()
            }
        };
        let plane = (prepared.width() * prepared.height()) as usize;
        for c in 0..3 {
            // A one-channel normalisation serves all three channels.
            let (scale, shift) = norm.affine(c.min(norm.channels() - 1));
            for (o, px) in out[c * plane..(c + 1) * plane].iter_mut().zip(prepared.pixels()) {
                *o = px.0[c] as f32 * scale + shift;
            }
        }
    }
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a box of random area and aspect ratio,
/// else the largest centred box within the ratio bounds. Returns `(x, y, width, height)`.
fn random_resized_crop_box(width: u32, height: u32, scale: (f32, f32), ratio: (f32, f32), rng: &mut CounterRng) -> (u32, u32, u32, u32) {
    let (w, h) = (width as f32, height as f32);
    let area = w * h;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform_in(scale.0, scale.1);
        let aspect = rng.uniform_in(log_lo, log_hi).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if 0 < cw && cw <= width && 0 < ch && ch <= height {
            let y = rng.below((height - ch + 1) as usize) as u32;
            let x = rng.below((width - cw + 1) as usize) as u32;
            return (x, y, cw, ch);
        }
    }
    let in_ratio = w / h;
    let (cw, ch) = if in_ratio < ratio.0 {
        (width, ((w / ratio.0).round() as u32).clamp(1, height))
    } else if in_ratio > ratio.1 {
        (((h * ratio.1).round() as u32).clamp(1, width), height)
    } else {
        (width, height)
    };
    ((width - cw) / 2, (height - ch) / 2, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity_norm() -> Normalize {
        Normalize::new(vec![0.0], vec![1.0 / 255.0]).unwrap()
    }

    #[test]
    fn pad_crop_flip_identity_and_flip() {
        let src: Vec<u8> = (0..12).collect();
        let mut out = vec![0.0; 12];
        let mut rng = CounterRng::new(0, 0, 0);
        PadCropFlip::default().apply(&src, [1, 3, 4], &identity_norm(), &mut rng, &mut out);
        assert_eq!(out, src.iter().map(|&b| b as f32).collect::<Vec<_>>());
        // Find a stream whose coin flips, then check the mirror image.
        let flipped_stream = (0..64).find(|&s| CounterRng::new(0, 0, s).coin()).unwrap();
        let mut rng = CounterRng::new(0, 0, flipped_stream);
        PadCropFlip { pad: 0, flip: true }.apply(&src, [1, 3, 4], &identity_norm(), &mut rng, &mut out);
        assert_eq!(&out[..4], &[3.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn pad_crop_shifts_within_padding_and_fills_zeros() {
        let src = vec![9u8; 16];
        let mut seen_shift = false;
        for stream in 0..32 {
            let mut out = vec![0.0; 16];
            let mut rng = CounterRng::new(1, 0, stream);
            PadCropFlip { pad: 1, flip: false }.apply(&src, [1, 4, 4], &identity_norm(), &mut rng, &mut out);
            let zeros = out.iter().filter(|&&v| v == 0.0).count();
            // A shift of at most one pixel per axis blanks at most one row and one column.
            assert!(zeros <= 7 && out.iter().all(|&v| v == 0.0 || v == 9.0), "{out:?}");
            seen_shift |= zeros > 0;
        }
        assert!(seen_shift);
    }

    #[test]
    fn normalisation_matches_the_formula() {
        let norm = Normalize::new(vec![0.5], vec![0.25]).unwrap();
        let mut out = vec![0.0; 2];
        PadCropFlip::default().apply(&[0, 255], [1, 1, 2], &norm, &mut CounterRng::new(0, 0, 0), &mut out);
        assert!((out[0] + 2.0).abs() < 1e-6 && (out[1] - 2.0).abs() < 1e-6, "{out:?}");
        assert!(Normalize::new(vec![0.5], vec![0.0]).is_err());
        assert!(Normalize::new(vec![0.5, 0.5], vec![1.0]).is_err());
    }

    #[test]
    fn random_resized_crop_boxes_stay_inside_and_respect_bounds() {
        for stream in 0..200 {
            let mut rng = CounterRng::new(3, 0, stream);
            let (x, y, w, h) = random_resized_crop_box(64, 40, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(w > 0 && h > 0 && x + w <= 64 && y + h <= 40, "{x} {y} {w} {h}");
        }
        // A box can never be wide enough for ratio >= 10 in a square: falls back to the centred box.
        let (x, y, w, h) = random_resized_crop_box(10, 10, (1.0, 1.0), (10.0, 12.0), &mut CounterRng::new(0, 0, 0));
        assert_eq!((x, y, w, h), (0, 4, 10, 1));
    }

    #[test]
    fn eval_transform_centre_crops() {
        // A 4×8 image whose columns are coloured by x; resize 4 (no-op), centre crop 4 keeps columns 2..6.
        let img = RgbImage::from_fn(8, 4, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let mut out = vec![0.0; 3 * 16];
        let norm = Normalize::new(vec![0.0, 0.0, 0.0], vec![1.0 / 255.0; 3]).unwrap();
        FolderTransform::Eval { resize: 4, size: 4 }.apply(&img, &norm, &mut CounterRng::new(0, 0, 0), &mut out);
        assert_eq!(&out[..4], &[20.0, 30.0, 40.0, 50.0]);
        assert!(FolderTransform::Eval { resize: 3, size: 4 }.validate().is_err());
        assert!(FolderTransform::train(0).validate().is_err());
    }
}
