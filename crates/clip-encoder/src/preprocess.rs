//! Image preprocessing exactly as `transformers`' `CLIPImageProcessor` does it: convert to RGB
//! (alpha composited onto white, greyscale replicated), resize the shortest edge to the model's
//! image size with PIL's bicubic filter, centre crop, scale to [0, 1], normalise with CLIP's mean/std.
//!
//! The resampler reproduces Pillow's `ImagingResample` (Keys cubic with a = -0.5, support widened by
//! the downscale factor for antialiasing, coefficients normalised per output sample, horizontal pass
//! then vertical pass). 8-bit images use Pillow's 22-bit fixed-point arithmetic and round to 8 bits
//! between the passes, so the result is Pillow's to the bit for the same decoded pixels; the residual
//! difference against the reference comes from JPEG decoders.

use std::path::Path;

use cvn_autograd::io::{MAX_IMAGE_BYTES, MAX_IMAGE_SIDE};
use cvn_autograd::Tensor;
use rayon::prelude::*;

use crate::error::{ClipError, Result};

/// CLIP's per-channel normalisation (OpenAI's training statistics).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

/// The preprocessing of one CLIP model: output is `[3, size, size]` CHW float32.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessor {
    /// The shortest edge is resized to this, and the centre crop is this square (224 for ViT-B/16).
    pub size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl ImageProcessor {
    /// CLIP's preprocessing for a vision tower of `image_size` pixels.
    pub fn clip(image_size: usize) -> Self {
        Self { size: image_size, mean: CLIP_MEAN, std: CLIP_STD }
    }

    /// Decodes an image file (JPEG or PNG) and preprocesses it.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>> {
        let bytes = std::fs::read(path).map_err(|e| ClipError::io(path, e))?;
        self.decode(&bytes, &path.display().to_string())
    }

    /// Decodes JPEG or PNG bytes — at most [`MAX_IMAGE_SIDE`] pixels a side and
    /// [`MAX_IMAGE_BYTES`] of decoding memory, checked on the header before any pixel is
    /// allocated — and preprocesses them; `name` identifies the image in errors.
    pub fn decode(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
        let err = |detail: String| ClipError::Image { source_name: name.to_string(), detail };
        let mut reader =
            image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().map_err(|e| err(format!("cannot read: {e}")))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_IMAGE_SIDE);
        limits.max_image_height = Some(MAX_IMAGE_SIDE);
        limits.max_alloc = Some(MAX_IMAGE_BYTES);
        reader.limits(limits);
        let decoded = reader.decode().map_err(|e| err(format!("cannot decode: {e}")))?;
        let (width, height) = (decoded.width() as usize, decoded.height() as usize);
        let planes = if decoded.color().has_alpha() {
            rgb_planes(&composite_on_white(decoded.to_rgba8().as_raw()), width, height)
        } else {
            rgb_planes(decoded.to_rgb8().as_raw(), width, height)
        };
        self.planes(planes, width, height, name)
    }

    /// Preprocesses interleaved 8-bit RGB pixels (`height * width * 3` bytes, row-major).
    pub fn rgb8(&self, pixels: &[u8], width: usize, height: usize) -> Result<Vec<f32>> {
        check_len("rgb8 pixels", pixels.len(), width, height, 3)?;
        self.planes(rgb_planes(pixels, width, height), width, height, "rgb8 pixels")
    }

    /// Preprocesses an 8-bit greyscale image (e.g. a Fashion-MNIST 28×28 digit), replicated to
    /// three channels as PIL's `convert("RGB")` does.
    pub fn gray8(&self, pixels: &[u8], width: usize, height: usize) -> Result<Vec<f32>> {
        check_len("gray8 pixels", pixels.len(), width, height, 1)?;
        let plane = pixels.to_vec();
        self.planes([plane.clone(), plane.clone(), plane], width, height, "gray8 pixels")
    }

    /// Preprocesses a float greyscale image with values in [0, 1] (torchvision `ToTensor` scale).
    /// Resampling is done in floating point, as Pillow does for mode `F` images, so no precision is
    /// lost to 8-bit rounding.
    pub fn gray_f32(&self, pixels: &[f32], width: usize, height: usize) -> Result<Vec<f32>> {
        check_len("gray_f32 pixels", pixels.len(), width, height, 1)?;
        let plane = pixels.to_vec();
        self.planes([plane.clone(), plane.clone(), plane], width, height, "gray_f32 pixels")
    }

    /// Preprocesses a decoded RGB image (what `dissect`'s probe sets hand out).
    pub fn rgb_image(&self, image: &image::RgbImage) -> Result<Vec<f32>> {
        self.rgb8(image.as_raw(), image.width() as usize, image.height() as usize)
    }

    /// Stacks preprocessed images (each `3 * size * size` values) into a `[n, 3, size, size]` tensor.
    pub fn stack(&self, images: Vec<Vec<f32>>) -> Result<Tensor> {
        let n = images.len();
        let per_image = 3 * self.size * self.size;
        if let Some(bad) = images.iter().position(|im| im.len() != per_image) {
            return Err(ClipError::input("image batch", format!("image {bad} has {} values, expected {per_image}", images[bad].len())));
        }
        Ok(Tensor::from_vec(images.concat(), &[n, 3, self.size, self.size])?)
    }

    /// Resize, crop and normalise three channel planes of `width * height` samples.
    fn planes<P: Pixel>(&self, planes: [Vec<P>; 3], width: usize, height: usize, what: &str) -> Result<Vec<f32>> {
        if width == 0 || height == 0 {
            return Err(ClipError::Image { source_name: what.into(), detail: "the image is empty".into() });
        }
        let (out_w, out_h) = shortest_edge_size(width, height, self.size);
        // A thin strip resizes to a huge one (1×10,000 pixels at size 224: 224×2,240,000).
        if out_w.max(out_h) > MAX_IMAGE_SIDE as usize {
            return Err(ClipError::Image {
                source_name: what.into(),
                detail: format!(
                    "a {width}x{height} image would be resized to {out_w}x{out_h}, longer than {MAX_IMAGE_SIDE} pixels: crop it nearer to a square"
                ),
            });
        }
        let (top, left) = ((out_h - self.size) / 2, (out_w - self.size) / 2);
        let mut out = Vec::with_capacity(3 * self.size * self.size);
        for (c, plane) in planes.iter().enumerate() {
            let resized = resize_plane(plane, width, height, out_w, out_h);
            for row in resized.chunks_exact(out_w).skip(top).take(self.size) {
                out.extend(row[left..left + self.size].iter().map(|&v| (v.unit() as f32 - self.mean[c]) / self.std[c]));
            }
        }
        Ok(out)
    }
}

fn check_len(what: &'static str, len: usize, width: usize, height: usize, channels: usize) -> Result<()> {
    if width.checked_mul(height).and_then(|n| n.checked_mul(channels)) != Some(len) {
        return Err(ClipError::input(what, format!("{len} values do not make a {width}x{height} image with {channels} channel(s)")));
    }
    Ok(())
}

/// `transformers`' `get_resize_output_image_size` with `shortest_edge`: the short side becomes
/// `size`, the long side is scaled and truncated. Returns `(width, height)`.
fn shortest_edge_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    let long = |l: usize, s: usize| ((size as f64 * l as f64 / s as f64) as usize).max(size);
    if width <= height {
        (size, long(height, width))
    } else {
        (long(width, height), size)
    }
}

/// Splits interleaved RGB into three planes.
fn rgb_planes(pixels: &[u8], width: usize, height: usize) -> [Vec<u8>; 3] {
    let n = width * height;
    let mut planes = [Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n)];
    for px in pixels.chunks_exact(3) {
        for (plane, &v) in planes.iter_mut().zip(px) {
            plane.push(v);
        }
    }
    planes
}

/// RGBA composited over an opaque white background, as `transformers`' `convert_rgb` does.
fn composite_on_white(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|px| {
            let a = px[3] as u32;
            [0, 1, 2].map(|c| ((px[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8)
        })
        .collect()
}

/// A sample type Pillow resamples: 8-bit (fixed point) or float (double accumulation).
trait Pixel: Copy + Send + Sync {
    type Weight: Copy + Send + Sync;
    /// Converts the normalised filter taps to this type's weights.
    fn weights(taps: &[f64]) -> Vec<Self::Weight>;
    fn convolve(samples: impl Iterator<Item = Self>, weights: &[Self::Weight]) -> Self;
    /// The value on the [0, 1] scale.
    fn unit(self) -> f64;
}

/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

impl Pixel for u8 {
    type Weight = i32;

    fn weights(taps: &[f64]) -> Vec<i32> {
        let one = (1u32 << PRECISION_BITS) as f64;
        taps.iter().map(|&k| if k < 0.0 { (-0.5 + k * one) as i32 } else { (0.5 + k * one) as i32 }).collect()
    }

    fn convolve(samples: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
        let acc = samples.zip(weights).fold(1i32 << (PRECISION_BITS - 1), |acc, (s, &w)| acc + s as i32 * w);
        (acc >> PRECISION_BITS).clamp(0, 255) as u8
    }

    fn unit(self) -> f64 {
        self as f64 / 255.0
    }
}

impl Pixel for f32 {
    type Weight = f64;

    fn weights(taps: &[f64]) -> Vec<f64> {
        taps.to_vec()
    }

    fn convolve(samples: impl Iterator<Item = f32>, weights: &[f64]) -> f32 {
        samples.zip(weights).map(|(s, &w)| s as f64 * w).sum::<f64>() as f32
    }

    fn unit(self) -> f64 {
        self as f64
    }
}

/// Pillow's bicubic kernel (`a = -0.5`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// The taps of every output sample along one axis (Pillow's `precompute_coeffs`).
struct AxisTaps<W> {
    /// First source index and number of taps of each output sample.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output sample (the first `bounds[i].1` are used).
    weights: Vec<W>,
    ksize: usize,
}

impl<W: Copy> AxisTaps<W> {
    fn new(in_size: usize, out_size: usize, to_weights: fn(&[f64]) -> Vec<W>) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filter_scale = scale.max(1.0);
        let support = 2.0 * filter_scale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut taps = vec![0.0f64; out_size * ksize];
        for (xx, k) in taps.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // Pillow rounds with `(int)(v + 0.5)`, which truncates towards zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            for (x, w) in k[..n].iter_mut().enumerate() {
                *w = bicubic((x as f64 + xmin as f64 - center + 0.5) / filter_scale);
            }
            let total: f64 = k[..n].iter().sum();
            if total != 0.0 {
                k[..n].iter_mut().for_each(|w| *w /= total);
            }
            bounds.push((xmin, n));
        }
        Self { bounds, weights: to_weights(&taps), ksize }
    }

    fn of(&self, i: usize) -> (usize, &[W]) {
        let (start, n) = self.bounds[i];
        (start, &self.weights[i * self.ksize..][..n])
    }
}

/// Pillow's two-pass resize of one plane; an axis whose size does not change is left untouched.
fn resize_plane<P: Pixel>(src: &[P], width: usize, height: usize, out_w: usize, out_h: usize) -> Vec<P> {
    let horizontal: Vec<P> = if out_w == width {
        src.to_vec()
    } else {
        let taps = AxisTaps::new(width, out_w, P::weights);
        src.par_chunks_exact(width)
            .flat_map_iter(|row| {
                let taps = &taps;
                (0..out_w).map(move |xx| {
                    let (start, w) = taps.of(xx);
                    P::convolve(row[start..].iter().copied(), w)
                })
            })
            .collect()
    };
    if out_h == height {
        return horizontal;
    }
    let taps = AxisTaps::new(height, out_h, P::weights);
    (0..out_h)
        .into_par_iter()
        .flat_map_iter(|yy| {
            let (start, w) = taps.of(yy);
            let horizontal = &horizontal;
            (0..out_w).map(move |x| P::convolve((start..).map(|y| horizontal[y * out_w + x]), w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test pattern the Pillow references below were computed from.
    fn pattern(w: usize, h: usize) -> Vec<u8> {
        (0..h).flat_map(|y| (0..w).map(move |x| ((x * 37 + y * 91 + 13) % 256) as u8)).collect()
    }

    #[test]
    fn eight_bit_resize_is_pillows_to_the_bit() {
        // Image.fromarray(pattern, "L").resize((ow, oh), Image.BICUBIC), Pillow 13.0.
        let down = resize_plane(&pattern(11, 7), 11, 7, 4, 3);
        assert_eq!(down, [109, 152, 123, 124, 126, 125, 144, 129, 137, 128, 131, 134]);
        let up = resize_plane(&pattern(3, 4), 3, 4, 7, 9);
        assert_eq!(
            up,
            [
                0, 7, 22, 41, 60, 75, 82, 18, 25, 40, 59, 80, 96, 103, 58, 65, 79, 99, 126, 149, 159, 105, 112, 128, 146, 162, 173, 178,
                162, 170, 193, 203, 158, 106, 90, 192, 201, 231, 233, 140, 37, 3, 133, 141, 166, 174, 116, 50, 30, 46, 53, 70, 87, 92, 92,
                94, 10, 17, 31, 51, 81, 107, 118
            ]
        );
    }

    #[test]
    fn float_resize_matches_pillow_mode_f() {
        let src: Vec<f32> = pattern(5, 4).iter().map(|&v| v as f32 / 255.0).collect();
        let ours = resize_plane(&src, 5, 4, 3, 7);
        let pillow = [
            0.07401396, 0.31286764, 0.5517214, 0.1953096, 0.46565065, 0.71370643, 0.43111992, 0.6953094, 0.9415674, 0.7177376, 0.49270406,
            0.595988, 0.8281636, 0.2543222, 0.25566792, 0.38857085, 0.34683737, 0.50369024, 0.11520986, 0.41948354, 0.6774561,
        ];
        for (a, b) in ours.iter().zip(pillow) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn shortest_edge_becomes_the_size_and_the_long_edge_is_truncated() {
        assert_eq!(shortest_edge_size(640, 427, 224), (335, 224));
        assert_eq!(shortest_edge_size(301, 517, 224), (224, 384));
        assert_eq!(shortest_edge_size(28, 28, 224), (224, 224));
    }

    #[test]
    fn greyscale_becomes_three_equal_channels() {
        let p = ImageProcessor::clip(32);
        let grey = pattern(28, 28);
        let out = p.gray8(&grey, 28, 28).unwrap();
        assert_eq!(out.len(), 3 * 32 * 32);
        let unnormalised: Vec<Vec<f32>> =
            out.chunks(32 * 32).enumerate().map(|(c, ch)| ch.iter().map(|v| v * CLIP_STD[c] + CLIP_MEAN[c]).collect()).collect();
        for other in &unnormalised[1..] {
            assert!(unnormalised[0].iter().zip(other).all(|(a, b)| (a - b).abs() < 1e-5));
        }
    }

    #[test]
    fn float_and_eight_bit_greyscale_agree_up_to_rounding() {
        let p = ImageProcessor::clip(32);
        // A smooth ramp: the cubic does not overshoot, so 8-bit clipping plays no part.
        let grey: Vec<u8> = (0..28 * 28).map(|i| ((i % 28) * 4 + (i / 28) * 5) as u8).collect();
        let floats: Vec<f32> = grey.iter().map(|&v| v as f32 / 255.0).collect();
        let (out, from_floats) = (p.gray8(&grey, 28, 28).unwrap(), p.gray_f32(&floats, 28, 28).unwrap());
        // 8-bit resampling rounds to whole levels (twice); float resampling does not.
        let worst = out.iter().zip(&from_floats).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1.0 / 255.0 / CLIP_STD[1], "{worst}");
    }

    #[test]
    fn constant_images_stay_constant() {
        let p = ImageProcessor::clip(16);
        let out = p.rgb8(&[200, 100, 50].repeat(40 * 25), 40, 25).unwrap();
        for (c, v) in [200.0f32, 100.0, 50.0].iter().enumerate() {
            let expected = (v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
            assert!(out[c * 256..(c + 1) * 256].iter().all(|x| (x - expected).abs() < 1e-5));
        }
    }

    #[test]
    fn wrong_sizes_and_missing_files_are_errors() {
        let p = ImageProcessor::clip(16);
        let err = p.rgb8(&[0; 10], 2, 2).unwrap_err().to_string();
        assert!(err.contains("rgb8") && err.contains("2x2"), "{err}");
        assert!(p.gray8(&[], 0, 0).is_err());
        let err = p.load(Path::new("/nonexistent/cat.jpg")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cat.jpg"), "{err}");
        let err = p.rgb8(&[0; 12], usize::MAX, 2).unwrap_err().to_string();
        assert!(err.contains("rgb8"), "{err}");
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::GrayImage::new(width, height).write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn images_too_large_to_decode_or_to_resize_are_refused() {
        let p = ImageProcessor::clip(224);
        // Small files both: one is wider than any decoded image may be, the other would be
        // resized to 224 × 2,240,000 pixels.
        let err = p.decode(&png(MAX_IMAGE_SIDE + 1, 1), "wide.png").unwrap_err().to_string();
        assert!(err.contains("wide.png") && err.contains("cannot decode") && err.contains("limit"), "{err}");
        let err = p.decode(&png(1, 10_000), "strip.png").unwrap_err().to_string();
        assert!(err.contains("strip.png") && err.contains("1x10000 image would be resized to 224x2240000"), "{err}");
        assert_eq!(p.decode(&png(300, 200), "fine.png").unwrap().len(), 3 * 224 * 224);
    }
}
