use super::LayoutOps;
use crate::cpu::CpuStorage;
use crate::error::Result;
use crate::storage::BackendStorage;

impl LayoutOps for CpuStorage {
    fn index_select(&self, row: usize, ids: &[u32]) -> Result<Self> {
        let table = self.floats("index_select")?;
        let mut out = Vec::with_capacity(ids.len() * row);
        ids.iter().for_each(|&i| out.extend_from_slice(&table[i as usize * row..(i as usize + 1) * row]));
        Ok(CpuStorage::from_floats(out, self.dtype()))
    }

    fn index_add(&self, rows: usize, row: usize, ids: &[u32]) -> Result<Self> {
        let g = self.floats("index_select")?;
        let mut gx = vec![0.0; rows * row];
        for (k, &i) in ids.iter().enumerate() {
            let i = i as usize;
            gx[i * row..(i + 1) * row].iter_mut().zip(&g[k * row..(k + 1) * row]).for_each(|(a, b)| *a += b);
        }
        Ok(CpuStorage::from_floats(gx, self.dtype()))
    }
}
