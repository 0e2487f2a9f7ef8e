use rayon::prelude::*;

use super::{PoolGeom, PoolOps};
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

impl PoolGeom {
    /// The first maximum of output pixel `(oy, ox)`'s window in `plane`, as (value, index).
    fn window_max(&self, plane: &[f32], oy: usize, ox: usize) -> (f32, usize) {
        let (mut best, mut at, mut found) = (f32::NEG_INFINITY, 0usize, false);
        for ky in 0..self.kernel {
            let iy = (oy * self.stride + ky) as isize - self.padding as isize;
            if iy < 0 || iy >= self.h as isize {
                continue;
            }
            for kx in 0..self.kernel {
                let ix = (ox * self.stride + kx) as isize - self.padding as isize;
                if ix < 0 || ix >= self.w as isize {
                    continue;
                }
                let i = iy as usize * self.w + ix as usize;
                if !found || plane[i] > best {
                    (best, at, found) = (plane[i], i, true);
                }
            }
        }
        (best, at)
    }
}

impl PoolOps for CpuStorage {
    fn max_pool2d(&self, g: &PoolGeom) -> Result<Self> {
        let x = self.floats("max_pool2d")?;
        let (hw, hwo) = (g.h * g.w, g.ho * g.wo);
        let mut out = vec![0.0f32; g.planes * hwo];
        out.par_chunks_mut(hwo.max(1)).enumerate().for_each(|(p, o)| {
            let plane = &x[p * hw..(p + 1) * hw];
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    o[oy * g.wo + ox] = g.window_max(plane, oy, ox).0;
                }
            }
        });
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn max_pool2d_backward(&self, grad: &Self, g: &PoolGeom) -> Result<Self> {
        let (x, gr) = (self.floats("max_pool2d")?, grad.floats("max_pool2d")?);
        let (hw, hwo) = (g.h * g.w, g.ho * g.wo);
        let mut gx = vec![0.0f32; g.planes * hw];
        gx.par_chunks_mut(hw.max(1)).enumerate().for_each(|(p, d)| {
            let plane = &x[p * hw..(p + 1) * hw];
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    d[g.window_max(plane, oy, ox).1] += gr[p * hwo + oy * g.wo + ox];
                }
            }
        });
        Ok(CpuStorage::from_floats(gx, grad.dtype()))
    }
}
