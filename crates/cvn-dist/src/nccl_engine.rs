//! The NCCL engine (cudarc's `nccl` module; libnccl is loaded at run time).
//!
//! **Never run**: it was written and compiled on machines without a GPU. It serves the same
//! host-slice interface as the other engines, so each collective stages its buffer through the
//! GPU (copy in, NCCL on the communicator's stream, copy out); a trainer that reduced its device
//! gradients in place, overlapped with the backward pass, would need an interface on device
//! buffers, which this crate does not have yet. A collective's completion is polled through an
//! event on the stream until the timeout; on a timeout the communicator is aborted when dropped
//! (`ncclCommAbort`, cudarc's `Drop`), which is what unblocks a stuck NCCL kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use crate::{check_root, Collectives, DistError, Result};

/// Bytes of an NCCL unique id.
pub const NCCL_ID_BYTES: usize = 128;

/// One NCCL rank on one GPU, with a timeout on every collective.
pub struct Nccl {
    comm: Comm,
    /// The MPI job that handed out the id, kept for [`Collectives::abort`] to end every rank.
    bootstrap: Option<Arc<dyn Collectives>>,
    stream: Arc<CudaStream>,
    rank: usize,
    world: usize,
    timeout: Duration,
    serial: Mutex<()>,
    broken: AtomicBool,
}

// SAFETY: the communicator and its stream are used under `serial` only, one call at a time, which
// is all NCCL asks of a communicator shared between threads.
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

fn engine_err(detail: impl std::fmt::Debug) -> DistError {
    DistError::Engine { engine: "nccl", detail: format!("{detail:?}") }
}

impl Nccl {
    /// A fresh unique id: rank 0 makes it and the launcher hands it to every rank
    /// (`train --gpus N` through the environment, an MPI job by [`Nccl::bootstrap_with_mpi`]).
    pub fn new_id() -> Result<[u8; NCCL_ID_BYTES]> {
        let id = Id::new().map_err(engine_err)?;
        Ok(id.internal().map(|c| c as u8))
    }

    /// Joins the communicator of `id` as `rank` of `world` on GPU `ordinal`.
    pub fn init(ordinal: usize, rank: usize, world: usize, id: [u8; NCCL_ID_BYTES], timeout: Duration) -> Result<Self> {
        let context = CudaContext::new(ordinal).map_err(engine_err)?;
        let stream = context.new_stream().map_err(engine_err)?;
        let comm = Comm::from_rank(stream.clone(), rank, world, Id::uninit(id.map(|b| b as _))).map_err(engine_err)?;
        Ok(Self { comm, bootstrap: None, stream, rank, world, timeout, serial: Mutex::new(()), broken: AtomicBool::new(false) })
    }

    /// [`Nccl::init`] for the ranks of an MPI job (across machines): rank 0's id is broadcast
    /// over MPI, and each rank takes the GPU of its local rank.
    #[cfg(feature = "mpi")]
    pub fn bootstrap_with_mpi(mpi: Arc<crate::Mpi>, local_rank: usize, timeout: Duration) -> Result<Self> {
        let mut id = if mpi.rank() == 0 { Self::new_id()? } else { [0; NCCL_ID_BYTES] };
        mpi.broadcast_bytes(&mut id, 0)?;
        let nccl = Self::init(local_rank, mpi.rank(), mpi.world_size(), id, timeout)?;
        Ok(Self { bootstrap: Some(mpi), ..nccl })
    }

    fn enter(&self) -> Result<MutexGuard<'_, ()>> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(DistError::Broken { rank: self.rank });
        }
        self.serial.lock().map_err(|_| DistError::Broken { rank: self.rank })
    }

    /// Waits until the work queued on the stream so far is done, or the timeout passes.
    fn wait(&self, op: &'static str) -> Result<()> {
        let event = self.stream.record_event(None).map_err(engine_err)?;
        let started = Instant::now();
        while !event.try_is_complete().map_err(engine_err)? {
            if started.elapsed() >= self.timeout {
                self.broken.store(true, Ordering::SeqCst);
                return Err(DistError::Timeout { op, rank: self.rank, world: self.world, seconds: self.timeout.as_secs() });
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        Ok(())
    }
}

impl Collectives for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn engine(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        let _serial = self.enter()?;
        if data.is_empty() {
            return Ok(());
        }
        let mut staged = self.stream.clone_htod(data).map_err(engine_err)?;
        self.comm.all_reduce_in_place(&mut staged, &ReduceOp::Sum).map_err(engine_err)?;
        self.wait("all-reduce")?;
        self.stream.memcpy_dtoh(&staged, data).map_err(engine_err)
    }

    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<()> {
        check_root(root, self.world)?;
        let _serial = self.enter()?;
        if data.is_empty() {
            return Ok(());
        }
        let mut staged = self.stream.clone_htod(data).map_err(engine_err)?;
        self.comm.broadcast_in_place(&mut staged, root as i32).map_err(engine_err)?;
        self.wait("broadcast")?;
        self.stream.memcpy_dtoh(&staged, data).map_err(engine_err)
    }

    fn barrier(&self) -> Result<()> {
        // NCCL has no barrier: an all-reduce of one value waits for every rank just the same.
        self.all_reduce_sum(&mut [0.0])
    }

    fn abort(&self, code: i32) -> ! {
        match &self.bootstrap {
            Some(mpi) => mpi.abort(code),
            // Without MPI the other ranks' own timeouts end them: NCCL cannot signal them.
            None => std::process::exit(code),
        }
    }
}

/// The id as [`Nccl::new_id`] makes it, from its hex form (for [`crate::NCCL_ID_VAR`]).
pub fn id_to_hex(id: &[u8; NCCL_ID_BYTES]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`id_to_hex`]'s form.
pub(crate) fn parse_id(hex: &str) -> Result<[u8; NCCL_ID_BYTES]> {
    let bad = || DistError::Launch(format!("{}: expected {} hex digits, got {:?}", crate::NCCL_ID_VAR, 2 * NCCL_ID_BYTES, hex));
    let mut id = [0u8; NCCL_ID_BYTES];
    if hex.len() != 2 * NCCL_ID_BYTES {
        return Err(bad());
    }
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_hex_and_bad_ones_are_named() {
        let id: [u8; NCCL_ID_BYTES] = std::array::from_fn(|i| (i * 37) as u8);
        assert_eq!(parse_id(&id_to_hex(&id)).unwrap(), id);
        assert!(parse_id("abc").unwrap_err().to_string().contains("CVN_NCCL_ID: expected 256 hex digits"));
        assert!(parse_id(&"zz".repeat(NCCL_ID_BYTES)).is_err());
    }
}
