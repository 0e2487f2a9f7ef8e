//! The MPI engine (rsmpi). Every collective is started non-blocking (`MPI_Iallreduce`, `MPI_Ibcast`,
//! `MPI_Ibarrier`) and tested until it completes or its deadline passes, which is how a blocking MPI
//! call gets a timeout. Buffers handed to MPI are the engine's own copies: when a collective times
//! out it can be neither cancelled nor waited for, so its buffers are left to MPI (leaked) and the
//! caller's memory is never written behind its back.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::request::{Request, StaticScope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use crate::{check_root, Collectives, DistError, Result};

/// MPI's world communicator, with a timeout on every collective.
pub struct Mpi {
    /// Finalised on drop unless a collective failed (then `MPI_Finalize` could wait for dead ranks).
    universe: ManuallyDrop<Universe>,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    timeout: Duration,
    /// MPI is initialised for serialised use (`MPI_THREAD_SERIALIZED`): one call at a time.
    serial: Mutex<()>,
    broken: AtomicBool,
}

// SAFETY: the communicator is a handle into the MPI library, which was initialised with at least
// MPI_THREAD_SERIALIZED; every call through it holds `serial`, so calls never overlap.
unsafe impl Send for Mpi {}
unsafe impl Sync for Mpi {}

/// A host buffer owned by MPI while a collective runs: reclaimed when it completes, leaked when
/// it times out.
struct Staged<T: 'static> {
    raw: *mut [T],
}

impl<T: Copy + 'static> Staged<T> {
    fn new(data: &[T]) -> Self {
        Self { raw: Box::into_raw(data.to_vec().into_boxed_slice()) }
    }

    /// The buffer for a request that is either completed before [`Staged::take`] or never
    /// reclaimed.
    fn for_mpi(&self) -> &'static mut [T] {
        // SAFETY: the allocation lives until `take`, which only runs after the request completed.
        unsafe { &mut *self.raw }
    }

    fn take(self) -> Box<[T]> {
        // SAFETY: `raw` came from `Box::into_raw` and the collective using it has completed.
        unsafe { Box::from_raw(self.raw) }
    }
}

impl Mpi {
    /// Initialises MPI (once per process) with collectives bounded by `timeout`.
    pub fn init(timeout: Duration) -> Result<Self> {
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized) else {
            return Err(engine_err("MPI is already initialised in this process"));
        };
        if threading < Threading::Serialized {
            return Err(engine_err(format!("the MPI library offers only {threading:?} threading; this engine needs Serialized")));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            universe: ManuallyDrop::new(universe),
            world,
            rank,
            size,
            timeout,
            serial: Mutex::new(()),
            broken: AtomicBool::new(false),
        })
    }

    /// The serial lock, unless an earlier collective failed.
    fn enter(&self) -> Result<MutexGuard<'_, ()>> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(DistError::Broken { rank: self.rank });
        }
        self.serial.lock().map_err(|_| DistError::Broken { rank: self.rank })
    }

    /// Tests `request` until it completes or the timeout passes.
    fn wait<D: ?Sized>(&self, op: &'static str, mut request: Request<'static, D, StaticScope>) -> Result<()> {
        let started = Instant::now();
        loop {
            request = match request.test() {
                Ok(_) => return Ok(()),
                Err(pending) => pending,
            };
            let waited = started.elapsed();
            if waited >= self.timeout {
                self.broken.store(true, Ordering::SeqCst);
                // SAFETY: the request is abandoned, never completed or freed: its buffers are
                // `Staged` ones that stay allocated for the rest of the process.
                let _ = unsafe { request.into_raw() };
                return Err(DistError::Timeout { op, rank: self.rank, world: self.size, seconds: self.timeout.as_secs() });
            }
            // Testing drives MPI's progress: poll hard at first, then let the other ranks (which
            // may share these cores) compute.
            if waited < Duration::from_millis(2) {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Whether a collective over `len` elements has anything to move (MPI rejects the dangling
    /// pointer of an empty buffer; every rank passes the same length, so all skip alike).
    fn moves(&self, len: usize) -> Result<bool> {
        i32::try_from(len).map(|_| len > 0).map_err(|_| engine_err(format!("a collective of {len} elements exceeds MPI's 2^31 − 1")))
    }
}

fn engine_err(detail: impl Into<String>) -> DistError {
    DistError::Engine { engine: "mpi", detail: detail.into() }
}

impl Collectives for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn engine(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
        let _serial = self.enter()?;
        if !self.moves(data.len())? {
            return Ok(());
        }
        let (send, recv) = (Staged::new(data), Staged::new(data));
        let request = self.world.immediate_all_reduce_into(StaticScope, &*send.for_mpi(), recv.for_mpi(), SystemOperation::sum());
        self.wait("all-reduce", request)?;
        data.copy_from_slice(&recv.take());
        drop(send.take());
        Ok(())
    }

    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<()> {
        check_root(root, self.size)?;
        let _serial = self.enter()?;
        if !self.moves(data.len())? {
            return Ok(());
        }
        let buffer = Staged::new(data);
        let request = self.world.process_at_rank(root as i32).immediate_broadcast_into(StaticScope, buffer.for_mpi());
        self.wait("broadcast", request)?;
        data.copy_from_slice(&buffer.take());
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        let _serial = self.enter()?;
        self.wait("barrier", self.world.immediate_barrier())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if !self.broken.load(Ordering::SeqCst) {
            // SAFETY: dropped once, here; nothing uses the universe afterwards.
            unsafe { ManuallyDrop::drop(&mut self.universe) }
        }
    }
}
