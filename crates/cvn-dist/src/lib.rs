//! Collectives for data-parallel training, behind one small interface ([`Collectives`]): all-reduce
//! (sum, average) in place, broadcast from a root and barrier, every one bounded by a timeout.
//!
//! Engines:
//! * [`Single`] — one process, world size 1: every collective is the identity. The default, and
//!   what a build without features has.
//! * `Mpi` (feature `mpi`) — MPI through rsmpi over the system's library (Debian: Open MPI's
//!   `libopenmpi-dev`), for CPU ranks; also how NCCL's unique id reaches the ranks of several machines.
//! * `Nccl` (feature `nccl`) — NCCL through cudarc, loaded at run time. Compiled, never run: the
//!   machines this was written on have no GPU.
//!
//! [`init`] picks the engine from how the process was launched ([`Launch::from_env`]): by `mpirun`
//! (Open MPI's `OMPI_COMM_WORLD_*`, or a PMI/PMIx launcher's variables) or torchrun-style (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`).
//!
//! # Faults
//! A collective that does not complete within its timeout (a rank died, hangs, or never reached it)
//! returns [`DistError::Timeout`] and leaves the engine *broken*: an unfinished collective cannot be
//! cancelled, so every later call fails at once, and the caller should end the job with
//! [`Collectives::abort`] (under `mpirun`, `MPI_Abort` ends every rank). A rank killed outright is
//! usually noticed sooner by `mpirun` itself, which then ends the others.

use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "mpi")]
mod mpi_engine;
#[cfg(feature = "nccl")]
mod nccl_engine;

#[cfg(feature = "mpi")]
pub use mpi_engine::Mpi;
#[cfg(feature = "nccl")]
pub use nccl_engine::{id_to_hex, Nccl, NCCL_ID_BYTES};

/// Gradient buckets of PyTorch DDP's default size (`bucket_cap_mb = 25`), in bytes.
pub const BUCKET_BYTES: usize = 25 << 20;

/// How long a collective waits for the other ranks unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of launching and of collectives.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A collective that the other ranks did not complete in time.
    #[error(
        "{op} timed out after {seconds} s on rank {rank} of {world}: another rank died, hangs or never reached it (see its output); ending the job"
    )]
    Timeout { op: &'static str, rank: usize, world: usize, seconds: u64 },
    /// A call after a collective failed: the engine's state is unknown.
    #[error("rank {rank}: an earlier collective failed, so no further one can run")]
    Broken { rank: usize },
    /// The environment describes a launch this build or engine cannot serve (variables named).
    #[error("launch: {0}")]
    Launch(String),
    /// An engine's own failure (MPI, NCCL, CUDA), with its message.
    #[error("{engine}: {detail}")]
    Engine { engine: &'static str, detail: String },
}

pub type Result<T> = std::result::Result<T, DistError>;

/// The collectives a data-parallel trainer needs. Every rank calls the same collectives in the same
/// order with buffers of the same length (the length is checked only as far as the engine does).
pub trait Collectives: Send + Sync {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// The engine's name (`single`, `mpi`, `nccl`), for messages.
    fn engine(&self) -> &'static str;
    /// Replaces `data` on every rank by its element-wise sum over all ranks.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()>;
    /// Replaces `data` on every rank by `root`'s.
    fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Ends this process and, where the engine can, every other rank of the job, with `code`.
    fn abort(&self, code: i32) -> !;

    /// Replaces `data` on every rank by its element-wise mean over all ranks: the sum, then a
    /// division by the world size (exact for a power of two).
    fn all_reduce_average(&self, data: &mut [f32]) -> Result<()> {
        self.all_reduce_sum(data)?;
        let world = self.world_size() as f32;
        data.iter_mut().for_each(|v| *v /= world);
        Ok(())
    }

    /// [`Collectives::broadcast_bytes`] of `f32` values.
    fn broadcast_f32(&self, data: &mut [f32], root: usize) -> Result<()> {
        self.broadcast_bytes(bytemuck::cast_slice_mut(data), root)
    }
}

/// [`cvn_autograd::CrossReplicaSum`] over a [`Collectives`] engine, for synchronised batch norm
/// (`Statistics::Synced`). The engines reduce only f32, so the f64 values are gathered instead:
/// every rank broadcasts its vector in turn (`world_size` broadcasts of a few `[C]`-sized
/// vectors) and each rank adds them up in rank order, in f64 — the same result on every rank and
/// no f32 rounding of the sums.
pub struct BnSum(pub std::sync::Arc<dyn Collectives>);

impl cvn_autograd::CrossReplicaSum for BnSum {
    fn sum_in_place(&self, values: &mut [f64]) -> cvn_autograd::Result<()> {
        let comm = &self.0;
        let mine = values.to_vec();
        let mut total = vec![0.0f64; values.len()];
        for root in 0..comm.world_size() {
            let mut part = if root == comm.rank() { mine.clone() } else { vec![0.0f64; values.len()] };
            comm.broadcast_bytes(bytemuck::cast_slice_mut(&mut part), root)
                .map_err(|e| cvn_autograd::Error::Device { op: "batch_norm2d", detail: format!("synchronised statistics: {e}") })?;
            total.iter_mut().zip(&part).for_each(|(t, p)| *t += p);
        }
        values.copy_from_slice(&total);
        Ok(())
    }
}

/// Averages `parts` over all ranks in buckets of at most `bucket_bytes` (a part larger than a bucket
/// is reduced on its own): consecutive parts are packed into one buffer per bucket, so a model of
/// many small tensors costs a few collectives per step, not one per tensor.
pub fn all_reduce_average_bucketed(comm: &dyn Collectives, parts: &mut [&mut [f32]], bucket_bytes: usize) -> Result<()> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let capacity = (bucket_bytes / size_of::<f32>()).max(1);
    let mut start = 0;
    while start < parts.len() {
        let mut end = start + 1;
        let mut len = parts[start].len();
        while end < parts.len() && len + parts[end].len() <= capacity {
            len += parts[end].len();
            end += 1;
        }
        if end - start == 1 {
            comm.all_reduce_average(parts[start])?;
        } else {
            let mut bucket = Vec::with_capacity(len);
            parts[start..end].iter().for_each(|p| bucket.extend_from_slice(p));
            comm.all_reduce_average(&mut bucket)?;
            let mut rest = &bucket[..];
            for part in &mut parts[start..end] {
                let (mine, tail) = rest.split_at(part.len());
                part.copy_from_slice(mine);
                rest = tail;
            }
        }
        start = end;
    }
    Ok(())
}

/// One process: world size 1, every collective the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collectives for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn engine(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _data: &mut [u8], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// An error unless `root` is a rank of a world of `world`.
#[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))]
fn check_root(root: usize, world: usize) -> Result<()> {
    if root < world {
        Ok(())
    } else {
        Err(DistError::Launch(format!("broadcast root {root} is not a rank of a world of {world}")))
    }
}

/// Who started this process and where it stands in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine (picks the GPU).
    pub local_rank: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Started on its own.
    Alone,
    /// By `mpirun`/`mpiexec` or another PMI launcher: the ranks are MPI's.
    Mpi,
    /// torchrun-style variables (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`), e.g. by `train --gpus N`.
    Torchrun,
}

/// Variables by which MPI launchers announce the world size: Open MPI, PMIx, PMI (MPICH's Hydra).
const MPI_SIZE_VARS: [&str; 3] = ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"];

impl Launch {
    /// Reads the launch from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads the launch from `var` (a variable's value by name), so it can be checked without
    /// touching the process environment.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<usize>> {
            var(name)
                .map(|v| v.trim().parse::<usize>().map_err(|_| DistError::Launch(format!("{name}={v} is not a non-negative integer"))))
                .transpose()
        };
        if MPI_SIZE_VARS.iter().any(|name| var(name).is_some()) {
            // The engine reads rank and size from MPI itself; the variables only say MPI is there.
            let world_size = MPI_SIZE_VARS.iter().find_map(|n| number(n).transpose()).transpose()?.unwrap_or(1);
            let rank =
                ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"].iter().find_map(|n| number(n).transpose()).transpose()?.unwrap_or(0);
            let local_rank = number("OMPI_COMM_WORLD_LOCAL_RANK")?.or(number("MPI_LOCALRANKID")?).unwrap_or(0);
            return Ok(Self { launcher: Launcher::Mpi, rank, world_size, local_rank });
        }
        match (number("WORLD_SIZE")?, number("RANK")?) {
            (None, None) => Ok(Self { launcher: Launcher::Alone, rank: 0, world_size: 1, local_rank: 0 }),
            (Some(world_size), Some(rank)) => {
                if world_size == 0 || rank >= world_size {
                    return Err(DistError::Launch(format!("RANK={rank} is not a rank of WORLD_SIZE={world_size}")));
                }
                let local_rank = number("LOCAL_RANK")?.unwrap_or(rank);
                Ok(Self { launcher: Launcher::Torchrun, rank, world_size, local_rank })
            }
            (Some(_), None) => Err(DistError::Launch("WORLD_SIZE is set but RANK is not: set both (torchrun-style) or neither".into())),
            (None, Some(_)) => Err(DistError::Launch("RANK is set but WORLD_SIZE is not: set both (torchrun-style) or neither".into())),
        }
    }
}

/// Variable by which `train --gpus N` hands rank 0's NCCL unique id (hex) to the ranks it spawns.
pub const NCCL_ID_VAR: &str = "CVN_NCCL_ID";

/// The engine for this process's launch. One rank, whoever launched it: [`Single`]. Under an MPI
/// launcher: MPI, or for `gpu` ranks in a build with the `nccl` feature NCCL, its id broadcast
/// over MPI. torchrun-style variables: NCCL, with the id in [`NCCL_ID_VAR`] (what `train --gpus N`
/// sets). `timeout` bounds every collective. A launch this build cannot serve is an error naming
/// what is missing, never a silent single-process run (which would train `N` copies side by side).
pub fn init(gpu: bool, timeout: Duration) -> Result<Arc<dyn Collectives>> {
    let launch = Launch::from_env()?;
    match launch.launcher {
        _ if launch.world_size == 1 => Ok(Arc::new(Single)),
        Launcher::Alone => Ok(Arc::new(Single)),
        Launcher::Mpi => init_mpi(gpu, &launch, timeout),
        Launcher::Torchrun => init_torchrun(gpu, &launch, timeout),
    }
}

#[cfg(feature = "mpi")]
fn init_mpi(gpu: bool, launch: &Launch, timeout: Duration) -> Result<Arc<dyn Collectives>> {
    let mpi = Mpi::init(timeout)?;
    #[cfg(feature = "nccl")]
    if gpu {
        return Ok(Arc::new(Nccl::bootstrap_with_mpi(Arc::new(mpi), launch.local_rank, timeout)?));
    }
    // Without NCCL, GPU ranks reduce their gradients over MPI through host memory.
    let _ = (gpu, launch);
    Ok(Arc::new(mpi))
}

#[cfg(not(feature = "mpi"))]
fn init_mpi(_gpu: bool, _launch: &Launch, _timeout: Duration) -> Result<Arc<dyn Collectives>> {
    Err(DistError::Launch(
        "started by an MPI launcher (OMPI_COMM_WORLD_SIZE / PMI_SIZE is set), but this binary was built without MPI: \
         rebuild with `--features mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
            .into(),
    ))
}

#[cfg(feature = "nccl")]
fn init_torchrun(gpu: bool, launch: &Launch, timeout: Duration) -> Result<Arc<dyn Collectives>> {
    match (gpu, std::env::var(NCCL_ID_VAR)) {
        (true, Ok(hex)) => {
            let id = nccl_engine::parse_id(&hex)?;
            Ok(Arc::new(Nccl::init(launch.local_rank, launch.rank, launch.world_size, id, timeout)?))
        }
        _ => Err(torchrun_unsupported(launch)),
    }
}

#[cfg(not(feature = "nccl"))]
fn init_torchrun(_gpu: bool, launch: &Launch, _timeout: Duration) -> Result<Arc<dyn Collectives>> {
    Err(torchrun_unsupported(launch))
}

/// Why torchrun-style variables alone cannot start a job (no rendezvous at `MASTER_ADDR` exists).
fn torchrun_unsupported(launch: &Launch) -> DistError {
    DistError::Launch(format!(
        "RANK={} WORLD_SIZE={}: ranks need an engine to meet through: launch CPU ranks with `mpirun -n {}`, GPU ranks \
         with `train --device cuda --gpus N` (a build with `--features nccl`, which passes the NCCL id in {NCCL_ID_VAR}) \
         or under mpirun; a rendezvous at MASTER_ADDR:MASTER_PORT is not implemented",
        launch.rank, launch.world_size, launch.world_size
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Launch> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn launches_are_read_from_the_environment() {
        assert_eq!(launch(&[]).unwrap(), Launch { launcher: Launcher::Alone, rank: 0, world_size: 1, local_rank: 0 });
        let mpi = launch(&[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "3"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")]).unwrap();
        assert_eq!(mpi, Launch { launcher: Launcher::Mpi, rank: 3, world_size: 4, local_rank: 1 });
        let torchrun = launch(&[("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "n1")]).unwrap();
        assert_eq!(torchrun, Launch { launcher: Launcher::Torchrun, rank: 1, world_size: 2, local_rank: 1 });
    }

    #[test]
    fn bad_launch_variables_are_named() {
        for (vars, needle) in [
            (&[("WORLD_SIZE", "2")][..], "RANK is not"),
            (&[("RANK", "0")][..], "WORLD_SIZE is not"),
            (&[("WORLD_SIZE", "2"), ("RANK", "2")][..], "RANK=2 is not a rank of WORLD_SIZE=2"),
            (&[("WORLD_SIZE", "two"), ("RANK", "0")][..], "WORLD_SIZE=two"),
            (&[("OMPI_COMM_WORLD_SIZE", "-1")][..], "OMPI_COMM_WORLD_SIZE=-1"),
        ] {
            let err = launch(vars).unwrap_err().to_string();
            assert!(err.contains(needle), "{vars:?}: {err}");
        }
    }

    /// Sums by pretending to be `world` ranks that all hold the same values.
    struct Replicated {
        world: usize,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Collectives for Replicated {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            self.world
        }
        fn engine(&self) -> &'static str {
            "replicated"
        }
        fn all_reduce_sum(&self, data: &mut [f32]) -> Result<()> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            data.iter_mut().for_each(|v| *v *= self.world as f32);
            Ok(())
        }
        fn broadcast_bytes(&self, _data: &mut [u8], _root: usize) -> Result<()> {
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }

    /// Rank 1 of 3 whose broadcasts deliver `(root + 1)·BASE` from every other root.
    struct ThreeRanks;
    const BASE: [f64; 3] = [1.0 + 1.0 / (1u64 << 40) as f64, -0.25, 12.0];

    impl Collectives for ThreeRanks {
        fn rank(&self) -> usize {
            1
        }
        fn world_size(&self) -> usize {
            3
        }
        fn engine(&self) -> &'static str {
            "three"
        }
        fn all_reduce_sum(&self, _data: &mut [f32]) -> Result<()> {
            panic!("BnSum must not reduce in f32")
        }
        fn broadcast_bytes(&self, data: &mut [u8], root: usize) -> Result<()> {
            if root != 1 {
                let v: Vec<f64> = BASE.iter().map(|b| b * (root + 1) as f64).collect();
                data.copy_from_slice(bytemuck::cast_slice(&v));
            }
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            std::process::exit(code)
        }
    }

    #[test]
    fn bn_sums_are_gathered_in_f64() {
        use cvn_autograd::CrossReplicaSum;
        let sum = BnSum(std::sync::Arc::new(ThreeRanks));
        let mut v: Vec<f64> = BASE.iter().map(|b| b * 2.0).collect();
        sum.sum_in_place(&mut v).unwrap();
        // 1 + 2 + 3 times BASE; an f32 reduction would lose the 2^-40.
        let want: Vec<f64> = BASE.iter().map(|b| b * 6.0).collect();
        assert_eq!(v, want);
    }

    #[test]
    fn buckets_pack_parts_and_give_every_value_back_in_place() {
        let comm = Replicated { world: 4, calls: Default::default() };
        let mut parts: Vec<Vec<f32>> = vec![vec![1.0, 2.0], vec![3.0], vec![4.0; 5], vec![5.0, 6.0]];
        let expected = parts.clone();
        let mut views: Vec<&mut [f32]> = parts.iter_mut().map(|p| &mut p[..]).collect();
        // 3 floats a bucket: [1, 2, 3], [4 × 5] alone (larger than a bucket), [5, 6].
        all_reduce_average_bucketed(&comm, &mut views, 3 * size_of::<f32>()).unwrap();
        assert_eq!(parts, expected, "the average of equal values is the value");
        assert_eq!(comm.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn single_process_collectives_are_the_identity() {
        let mut data = vec![1.5f32, -2.0];
        Single.all_reduce_average(&mut data).unwrap();
        Single.broadcast_f32(&mut data, 0).unwrap();
        Single.barrier().unwrap();
        assert_eq!(data, [1.5, -2.0]);
        assert!(Single.broadcast_bytes(&mut [0u8], 1).unwrap_err().to_string().contains("root 1"));
    }
}
