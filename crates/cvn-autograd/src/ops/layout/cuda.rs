use super::LayoutOps;
use crate::cuda::{arg, entry, CudaStorage, Module};
use crate::dtype::DType;
use crate::error::{shape_err, Result};
use crate::storage::{BackendDevice, BackendStorage};

/// The ids on the device, after checking they address rows of the table.
fn upload_ids(table: &CudaStorage, rows: usize, ids: &[u32]) -> Result<CudaStorage> {
    if let Some(bad) = ids.iter().find(|&&i| i as usize >= rows) {
        return shape_err("index_select", format!("index {bad} is out of range for {rows} rows"));
    }
    table.dev().from_u32(ids)
}

impl LayoutOps for CudaStorage {
    fn index_select(&self, row: usize, ids: &[u32]) -> Result<Self> {
        let rows = self.len() / row.max(1);
        let dev_ids = upload_ids(self, rows, ids)?;
        let n = ids.len() * row;
        let out = self.alloc_like(self.dtype(), n)?;
        let name = entry("index_select", "index_select", self.dtype())?;
        let args = [arg::ptr(self), arg::ptr(&dev_ids), arg::ptr(&out), arg::n(row), arg::n(n)];
        // SAFETY: every id addresses a row of the table (checked); out holds ids·row elements.
        unsafe { self.launch_elementwise(Module::Layout, &name, n, &args) }?;
        Ok(out)
    }

    fn index_add(&self, rows: usize, row: usize, ids: &[u32]) -> Result<Self> {
        if self.len() != ids.len() * row {
            return shape_err("index_select", format!("gradient of {} elements for {} rows of {row}", self.len(), ids.len()));
        }
        let dev_ids = upload_ids(self, rows, ids)?;
        // atomics accumulate in f32; bf16 tables get the sums rounded once
        let acc = self.dev().zeros(DType::F32, rows * row)?;
        let name = entry("index_select", "index_add", self.dtype())?;
        let args = [arg::ptr(self), arg::ptr(&dev_ids), arg::ptr(&acc), arg::n(row), arg::n(self.len())];
        // SAFETY: ids address rows of `acc` (checked); the gradient holds ids·row elements.
        unsafe { self.launch_elementwise(Module::Layout, &name, self.len(), &args) }?;
        if self.dtype() == DType::F32 {
            Ok(acc)
        } else {
            acc.cast(self.dtype())
        }
    }
}
