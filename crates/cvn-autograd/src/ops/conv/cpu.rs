use rayon::prelude::*;

use super::{ConvGeom, ConvOps};
use crate::cpu::gemm::{gemm, Mat};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

/// Images per chunk keep the unfolded columns around this many floats, so the GEMM is large
/// enough to run at full speed and memory stays bounded at ImageNet sizes.
const COL_BUDGET: usize = 1 << 23;

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
    /// Images per chunk (see [`COL_BUDGET`]).
    pub(super) fn chunk(&self) -> usize {
        (COL_BUDGET / (self.ckk() * self.hwo()).max(1)).clamp(1, self.n.max(1))
    }

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
        let (n, c, h, w, o) = (g.n, g.c, g.h, g.w, g.o);
        let chunk = g.chunk();
        let mut out = vec![0.0f32; n * o * g.hwo()];
        let mut col = Scratch::new(g.ckk() * chunk * g.hwo());
        let mut tmp = Scratch::new(o * chunk * g.hwo());
        for start in (0..n).step_by(chunk) {
            let b = chunk.min(n - start);
            let cols = b * g.hwo();
            g.im2col(&x[start * c * h * w..], b, &mut col[..g.ckk() * cols]);
            gemm(Mat::new(&wd, o, g.ckk()), Mat::new(&col[..g.ckk() * cols], g.ckk(), cols), &mut tmp[..o * cols], 0.0)?;
            // [O, b·HWo] → [b, O, HWo], adding the bias on the way.
            out[start * o * g.hwo()..(start + b) * o * g.hwo()].par_chunks_mut(g.hwo()).enumerate().for_each(|(bo, dst)| {
                let (bi, oc) = (bo / o, bo % o);
                let bias = bias.as_ref().map_or(0.0, |t| t[oc]);
                dst.iter_mut().zip(&tmp[oc * cols + bi * g.hwo()..][..g.hwo()]).for_each(|(d, s)| *d = s + bias);
            });
        }
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
        let (n, c, h, w, o) = (g.n, g.c, g.h, g.w, g.o);
        let chunk = g.chunk();
        let mut gw = vec![0.0f32; o * g.ckk()];
        let mut gx = if need_x { vec![0.0f32; x.len()] } else { Vec::new() };
        let mut col = Scratch::new(g.ckk() * chunk * g.hwo());
        let mut gcol = Scratch::new(g.ckk() * chunk * g.hwo());
        let mut gt = Scratch::new(o * chunk * g.hwo());
        for start in (0..n).step_by(chunk) {
            let b = chunk.min(n - start);
            let cols = b * g.hwo();
            // [b, O, HWo] → [O, b·HWo]
            gt[..o * cols].par_chunks_mut(cols.max(1)).enumerate().for_each(|(oc, dst)| {
                for bi in 0..b {
                    dst[bi * g.hwo()..(bi + 1) * g.hwo()].copy_from_slice(&grad[((start + bi) * o + oc) * g.hwo()..][..g.hwo()]);
                }
            });
            let gmat = Mat::new(&gt[..o * cols], o, cols);
            if need_w {
                g.im2col(&x[start * c * h * w..], b, &mut col[..g.ckk() * cols]);
                gemm(gmat, Mat::new(&col[..g.ckk() * cols], g.ckk(), cols).t(), &mut gw, 1.0)?;
            }
            if need_x {
                gemm(Mat::new(&wd, o, g.ckk()).t(), gmat, &mut gcol[..g.ckk() * cols], 0.0)?;
                g.col2im(&gcol[..g.ckk() * cols], b, &mut gx[start * c * h * w..(start + b) * c * h * w]);
            }
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
}
