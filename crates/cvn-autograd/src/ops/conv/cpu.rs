use rayon::prelude::*;

use super::{ConvGeom, ConvOps};
use crate::cpu::gemm::{gemm, Mat};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

/// Groups of images whose weight-gradient partials are computed in parallel (see
/// `conv2d_backward`): enough for the cores of a small machine, few enough that the partials
/// (each the size of the weight) stay cheap.
const GW_GROUPS: usize = 4;

thread_local! {
    /// Unfolded-column and GEMM-output buffers kept between calls: a fresh 30 MB allocation per
    /// convolution pays its page faults (and the kernel's zeroing) on every call.
    static SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer of `len` floats from this thread's pool, returned to it on drop. Its contents are
/// whatever the last user left: callers overwrite every element before reading.
struct Scratch(Vec<f32>);

impl Scratch {
    fn new(len: usize) -> Self {
        let mut buf = SCRATCH.with(|pool| pool.borrow_mut().pop()).unwrap_or_default();
        buf.resize(len, 0.0);
        Scratch(buf)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        SCRATCH.with(|pool| pool.borrow_mut().push(buf));
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl ConvGeom {
    /// Output columns `ox` whose input column `ox·stride + kj − pad` lies inside the image, as
    /// `lo..hi` (empty when none does): the rest of an unfolded row is padding.
    fn valid_cols(&self, kj: usize) -> std::ops::Range<usize> {
        let lo = self.pad.saturating_sub(kj).div_ceil(self.stride).min(self.wo);
        // the last valid ox satisfies ox·stride ≤ w − 1 + pad − kj
        let hi = match (self.w + self.pad).checked_sub(kj + 1) {
            Some(last) => (last / self.stride + 1).min(self.wo),
            None => 0,
        };
        lo..hi.max(lo)
    }

    /// Unfolds `images` images starting at `x` into `col [C·kh·kw, images·HWo]`: row `(c, i, j)`,
    /// column `b·HWo + p` holds the input pixel that kernel tap `(i, j)` sees at output pixel `p`.
    /// The valid span of each output row is one slice copy at stride 1 (a strided gather
    /// otherwise), with the padding filled around it: no per-pixel bounds tests.
    fn im2col(&self, x: &[f32], images: usize, col: &mut [f32]) {
        let (hwo, cols) = (self.hwo(), images * self.hwo());
        col.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let (ch, ki, kj) = (r / (self.kh * self.kw), (r / self.kw) % self.kh, r % self.kw);
            let valid = self.valid_cols(kj);
            for b in 0..images {
                let plane = &x[(b * self.c + ch) * self.h * self.w..][..self.h * self.w];
                let dst = &mut row[b * hwo..(b + 1) * hwo];
                for oy in 0..self.ho {
                    let iy = (oy * self.stride + ki) as isize - self.pad as isize;
                    let out_row = &mut dst[oy * self.wo..(oy + 1) * self.wo];
                    if iy < 0 || iy >= self.h as isize || valid.is_empty() {
                        out_row.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * self.w..][..self.w];
                    out_row[..valid.start].fill(0.0);
                    out_row[valid.end..].fill(0.0);
                    let first = valid.start * self.stride + kj - self.pad;
                    if self.stride == 1 {
                        out_row[valid.clone()].copy_from_slice(&src[first..first + valid.len()]);
                    } else {
                        out_row[valid.clone()].iter_mut().zip(src[first..].iter().step_by(self.stride)).for_each(|(v, s)| *v = *s);
                    }
                }
            }
        });
    }

    /// The adjoint of `im2col`: adds columns back into image gradients (parallel over channels).
    fn col2im(&self, col: &[f32], images: usize, dx: &mut [f32]) {
        let (hwo, cols, kk) = (self.hwo(), images * self.hwo(), self.kh * self.kw);
        let plane_len = self.h * self.w;
        // dx is [images, C, H, W]; split by image then channel so each task owns one plane.
        dx.par_chunks_mut(plane_len).enumerate().for_each(|(bp, plane)| {
            let (b, ch) = (bp / self.c, bp % self.c);
            for k in 0..kk {
                let (ki, kj) = (k / self.kw, k % self.kw);
                let valid = self.valid_cols(kj);
                if valid.is_empty() {
                    continue;
                }
                let first = valid.start * self.stride + kj - self.pad;
                let row = &col[(ch * kk + k) * cols + b * hwo..][..hwo];
                for oy in 0..self.ho {
                    let iy = (oy * self.stride + ki) as isize - self.pad as isize;
                    if iy < 0 || iy >= self.h as isize {
                        continue;
                    }
                    let dst = &mut plane[iy as usize * self.w..][..self.w];
                    let src = &row[oy * self.wo + valid.start..oy * self.wo + valid.end];
                    dst[first..].iter_mut().step_by(self.stride).zip(src).for_each(|(d, g)| *d += g);
                }
            }
        });
    }
}

impl ConvOps for CpuStorage {
    fn conv2d(&self, weight: &Self, bias: Option<&Self>, g: &ConvGeom) -> Result<Self> {
        let (x, wd) = (self.floats("conv2d")?, weight.floats("conv2d")?);
        let bias = bias.map(|b| b.floats("conv2d")).transpose()?;
        let (image_in, image_out) = (g.c * g.h * g.w, g.o * g.hwo());
        let mut out = vec![0.0f32; g.n * image_out];
        // One image per task: its unfolded columns stay in L2 and the GEMM writes `[O, HWo]`,
        // which is that image's output, in place. (The GEMM is too thin in O to thread itself.)
        out.par_chunks_mut(image_out.max(1)).zip(x.par_chunks(image_in.max(1))).try_for_each(|(dst, x)| {
            let mut col = Scratch::new(g.ckk() * g.hwo());
            g.im2col(x, 1, &mut col);
            gemm(Mat::new(&wd, g.o, g.ckk()), Mat::new(&col, g.ckk(), g.hwo()), dst, 0.0)?;
            if let Some(bias) = &bias {
                dst.chunks_mut(g.hwo().max(1)).zip(bias.iter()).for_each(|(row, b)| row.iter_mut().for_each(|v| *v += b));
            }
            Ok::<(), crate::Error>(())
        })?;
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn conv2d_backward(
        &self,
        weight: &Self,
        grad: &Self,
        g: &ConvGeom,
        need_x: bool,
        need_w: bool,
    ) -> Result<(Option<Self>, Option<Self>)> {
        let (x, wd, grad) = (self.floats("conv2d")?, weight.floats("conv2d")?, grad.floats("conv2d")?);
        let (n, o) = (g.n, g.o);
        let (image_in, image_out) = (g.c * g.h * g.w, o * g.hwo());
        let mut gw = Vec::new();
        if need_w && n > 0 {
            // Images split into a fixed number of groups (not one per thread, so the sums do not
            // depend on the machine), each accumulating its own partial gradient image by image;
            // the partials are then added in group order.
            let per_group = n.div_ceil(GW_GROUPS);
            let partials = (0..n.div_ceil(per_group))
                .into_par_iter()
                .map(|group| {
                    let mut part = vec![0.0f32; o * g.ckk()];
                    let mut col = Scratch::new(g.ckk() * g.hwo());
                    for i in group * per_group..((group + 1) * per_group).min(n) {
                        g.im2col(&x[i * image_in..], 1, &mut col);
                        let gy = Mat::new(&grad[i * image_out..(i + 1) * image_out], o, g.hwo());
                        gemm(gy, Mat::new(&col, g.ckk(), g.hwo()).t(), &mut part, 1.0)?;
                    }
                    Ok(part)
                })
                .collect::<Result<Vec<_>>>()?;
            let mut partials = partials.into_iter();
            gw = partials.next().unwrap_or_default();
            for part in partials {
                gw.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
            }
        }
        let mut gx = if need_x { vec![0.0f32; x.len()] } else { Vec::new() };
        if need_x {
            // Per image, as the forward: its column gradients stay in L2.
            gx.par_chunks_mut(image_in.max(1)).zip(grad.par_chunks(image_out.max(1))).try_for_each(|(dx, gy)| {
                let mut gcol = Scratch::new(g.ckk() * g.hwo());
                gemm(Mat::new(&wd, o, g.ckk()).t(), Mat::new(gy, o, g.hwo()), &mut gcol, 0.0)?;
                g.col2im(&gcol, 1, dx);
                Ok::<(), crate::Error>(())
            })?;
        }
        let dtype = self.dtype();
        Ok((need_x.then(|| CpuStorage::from_floats(gx, dtype)), need_w.then(|| CpuStorage::from_floats(gw, weight.dtype()))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `im2col` and `col2im` against their per-pixel definitions, on geometries where whole rows,
    /// row edges or everything are padding (pad ≥ kernel, stride > kernel, one-pixel images), and
    /// "same" convolutions down to one-row and one-column images.
    #[test]
    fn unfolding_matches_the_per_pixel_definition() {
        for (c, h, w, k, stride, pad) in [
            (2, 5, 7, 3, 1, 1),
            (1, 6, 6, 3, 2, 1),
            (2, 7, 5, 7, 2, 3),
            (1, 4, 9, 1, 3, 0),
            (1, 1, 1, 3, 1, 2),
            (1, 3, 2, 2, 3, 2),
            (2, 6, 5, 5, 1, 2),
            (1, 4, 4, 1, 1, 0),
            (1, 1, 4, 3, 1, 1),
            (1, 3, 1, 3, 1, 1),
            (1, 2, 2, 5, 1, 2),
        ] {
            let ho = (h + 2 * pad - k) / stride + 1;
            let wo = (w + 2 * pad - k) / stride + 1;
            let g = ConvGeom { n: 2, c, o: 1, h, w, kh: k, kw: k, stride, pad, ho, wo };
            let images = 2;
            let x: Vec<f32> = (0..images * c * h * w).map(|i| i as f32 + 1.0).collect();
            let pixel = |b: usize, ch: usize, ki: usize, kj: usize, oy: usize, ox: usize| {
                let (iy, ix) = ((oy * stride + ki) as isize - pad as isize, (ox * stride + kj) as isize - pad as isize);
                let inside = (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                inside.then(|| ((b * c + ch) * h + iy as usize) * w + ix as usize)
            };
            let cols = images * g.hwo();
            let mut col = vec![f32::NAN; g.ckk() * cols];
            g.im2col(&x, images, &mut col);
            let mut dx_expected = vec![0.0f32; x.len()];
            for (r, row) in col.chunks(cols).enumerate() {
                let (ch, ki, kj) = (r / (k * k), (r / k) % k, r % k);
                for b in 0..images {
                    for (p, &v) in row[b * g.hwo()..(b + 1) * g.hwo()].iter().enumerate() {
                        let source = pixel(b, ch, ki, kj, p / wo, p % wo);
                        assert_eq!(
                            v,
                            source.map_or(0.0, |i| x[i]),
                            "geometry {:?}, row {r}, image {b}, pixel {p}",
                            (c, h, w, k, stride, pad)
                        );
                        if let Some(i) = source {
                            dx_expected[i] += v;
                        }
                    }
                }
            }
            let mut dx = vec![0.0f32; x.len()];
            g.col2im(&col, images, &mut dx);
            assert_eq!(dx, dx_expected, "col2im, geometry {:?}", (c, h, w, k, stride, pad));
        }
    }

    /// The per-image forward and backward (images in parallel, weight-gradient partials over
    /// groups of images, one group shorter than the rest) against the direct definition in f64.
    #[test]
    fn per_image_convolution_matches_the_direct_definition() {
        let (n, c, o, h, w, k, stride, pad) = (5, 3, 4, 6, 5, 3, 2, 1);
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
        let g = ConvGeom { n, c, o, h, w, kh: k, kw: k, stride, pad, ho, wo };
        let value = |i: usize, seed: usize| ((i * 7919 + seed * 104_729) % 197) as f32 / 98.5 - 1.0;
        let x: Vec<f32> = (0..n * c * h * w).map(|i| value(i, 1)).collect();
        let wt: Vec<f32> = (0..o * c * k * k).map(|i| value(i, 2)).collect();
        let bias: Vec<f32> = (0..o).map(|i| value(i, 3)).collect();
        let gy: Vec<f32> = (0..n * o * ho * wo).map(|i| value(i, 4)).collect();
        let (mut y, mut gx, mut gw) = (vec![0.0f64; gy.len()], vec![0.0f64; x.len()], vec![0.0f64; wt.len()]);
        for (b, oc, oy, ox, ch, ki, kj) in (0..n).flat_map(|b| {
            (0..o).flat_map(move |oc| {
                (0..ho).flat_map(move |oy| {
                    (0..wo).flat_map(move |ox| {
                        (0..c).flat_map(move |ch| (0..k).flat_map(move |ki| (0..k).map(move |kj| (b, oc, oy, ox, ch, ki, kj))))
                    })
                })
            })
        }) {
            let out = ((b * o + oc) * ho + oy) * wo + ox;
            let wi = ((oc * c + ch) * k + ki) * k + kj;
            if ch == 0 && ki == 0 && kj == 0 {
                y[out] += bias[oc] as f64;
            }
            let (iy, ix) = ((oy * stride + ki) as isize - pad as isize, (ox * stride + kj) as isize - pad as isize);
            if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                let xi = ((b * c + ch) * h + iy as usize) * w + ix as usize;
                y[out] += x[xi] as f64 * wt[wi] as f64;
                gx[xi] += gy[out] as f64 * wt[wi] as f64;
                gw[wi] += gy[out] as f64 * x[xi] as f64;
            }
        }
        let close = |got: &[f32], want: &[f64], what: &str| {
            for (i, (a, b)) in got.iter().zip(want).enumerate() {
                // f32 sums of at most n·Ho·Wo = 60 products of magnitude ≤ 1
                assert!((*a as f64 - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}[{i}]: {a} vs {b}");
            }
        };
        let (xs, ws, bs, gs) = (CpuStorage::F32(x), CpuStorage::F32(wt), CpuStorage::F32(bias), CpuStorage::F32(gy));
        close(&xs.conv2d(&ws, Some(&bs), &g).unwrap().to_f32_vec().unwrap(), &y, "y");
        let (dx, dw) = xs.conv2d_backward(&ws, &gs, &g, true, true).unwrap();
        close(&dx.unwrap().to_f32_vec().unwrap(), &gx, "dx");
        close(&dw.unwrap().to_f32_vec().unwrap(), &gw, "dw");
    }
}
