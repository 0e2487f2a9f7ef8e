// Shared helpers of the CUDA backend's kernels (included by every ops/<op>/kernels.cu).
//
// Storage is f32 or bf16 (as u16 bits), arithmetic is f32: `load` widens, `store` rounds to
// nearest even (`cvt.rn.bf16.f32`, what `half::bf16::from_f32` does). No CUDA headers are needed,
// so NVRTC compiles these files as they are (see xtask/src/build_kernels.rs).
#pragma once

typedef unsigned short bf16_t;
typedef unsigned long long u64;

#define MAX_DIMS 8
// Threads per CTA of the element-wise and row kernels (the Rust side launches with the same).
#define THREADS 256
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf16_to_f32(bf16_t h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    bf16_t h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float load(const float* p, u64 i) { return p[i]; }
__device__ __forceinline__ float load(const bf16_t* p, u64 i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void store(float* p, u64 i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16_t* p, u64 i, float v) { p[i] = f32_to_bf16(v); }

// A strided view (crate::shape::StridedView): element i (row-major over `shape`) is source
// element offset + Σ coord_d·strides_d. Mirrors `cuda::params::View` byte for byte.
struct View {
    u64 rank;
    u64 shape[MAX_DIMS];
    u64 strides[MAX_DIMS];
    u64 offset;
};

__device__ __forceinline__ u64 view_index(const View& v, u64 i) {
    u64 at = v.offset;
    for (int d = (int)v.rank - 1; d >= 0; --d) {
        const u64 size = v.shape[d];
        at += (i % size) * v.strides[d];
        i /= size;
    }
    return at;
}

#define GRID_STRIDE(i, n) for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < (n); i += (u64)gridDim.x * blockDim.x)

// Sum over the CTA (blockDim.x a power of two ≤ THREADS), in shared memory: every thread gets
// the total. Deterministic: the same tree for every launch.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
        __syncthreads();
    }
    const T total = scratch[0];
    __syncthreads();
    return total;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    for (unsigned s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) scratch[threadIdx.x] = fmaxf(scratch[threadIdx.x], scratch[threadIdx.x + s]);
        __syncthreads();
    }
    const float total = scratch[0];
    __syncthreads();
    return total;
}

// Instantiates a kernel for both float storage types: DEF(suffix, T) defines NAME_##suffix
// (NAME_f32, NAME_bf16) as a thin extern "C" wrapper of a template.
#define FLOATS(DEF) DEF(f32, float) DEF(bf16, bf16_t)
