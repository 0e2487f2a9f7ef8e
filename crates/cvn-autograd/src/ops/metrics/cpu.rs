use super::MetricOps;
use crate::cpu::CpuStorage;
use crate::error::{dtype_err, Result};
use crate::storage::BackendStorage;

fn count(counter: &mut CpuStorage, n: usize) -> Result<()> {
    match counter {
        CpuStorage::U64(c) => {
            c[0] += n as u64;
            Ok(())
        }
        other => dtype_err("counter", format!("a counter is u64, got {}", other.dtype())),
    }
}

/// Index of the largest value (the first one on ties).
pub(crate) fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

impl MetricOps for CpuStorage {
    fn add_nonzero(&mut self, x: &Self) -> Result<()> {
        let n = x.floats("count_nonzero")?.iter().filter(|v| **v != 0.0).count();
        count(self, n)
    }

    fn add_equal(&mut self, a: &Self, b: &Self) -> Result<()> {
        let n = match (a, b) {
            (CpuStorage::U8(a), CpuStorage::U8(b)) => a.iter().zip(b).filter(|(a, b)| a == b).count(),
            _ => return dtype_err("count_equal", "needs u8 tensors"),
        };
        count(self, n)
    }

    fn add_correct(&mut self, logits: &Self, labels: &Self, _n: usize, c: usize) -> Result<()> {
        let CpuStorage::U32(labels) = labels else {
            return dtype_err("count_correct", "labels must be u32");
        };
        let x = logits.floats("count_correct")?;
        let n = x.chunks(c.max(1)).zip(labels).filter(|(row, &label)| argmax(row) == label as usize).count();
        count(self, n)
    }
}
