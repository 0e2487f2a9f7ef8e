// Storage kernels of the CUDA backend (crate::cuda): casts, fills, strided copies and in-place
// accumulation, on which the layout ops, broadcasting and gradient accumulation are built.
#include "common.cuh"

extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x, bf16_t* __restrict__ y, u64 n) {
    GRID_STRIDE(i, n) y[i] = f32_to_bf16(x[i]);
}

extern "C" __global__ void cast_bf16_f32(const bf16_t* __restrict__ x, float* __restrict__ y, u64 n) {
    GRID_STRIDE(i, n) y[i] = bf16_to_f32(x[i]);
}

extern "C" __global__ void fill_u32(unsigned* __restrict__ p, unsigned bits, u64 n) {
    GRID_STRIDE(i, n) p[i] = bits;
}

extern "C" __global__ void fill_u16(unsigned short* __restrict__ p, unsigned short bits, u64 n) {
    GRID_STRIDE(i, n) p[i] = bits;
}

// dst[dst_offset + i] = src[view(i)]: a view made contiguous (permutes, slices, broadcasts).
// Element types by size: u8, u16 (bf16), u32 (f32, u32), u64.
#define COPY(SUF, T)                                                                                         \
    extern "C" __global__ void copy_strided_##SUF(const T* __restrict__ src, T* __restrict__ dst, View v, u64 dst_offset, u64 n) { \
        GRID_STRIDE(i, n) dst[dst_offset + i] = src[view_index(v, i)];                                      \
    }                                                                                                        \
    extern "C" __global__ void copy_into_##SUF(const T* __restrict__ src, T* __restrict__ dst, View v, u64 n) { \
        GRID_STRIDE(i, n) dst[view_index(v, i)] = src[i];                                                   \
    }
COPY(u8, unsigned char)
COPY(u16, unsigned short)
COPY(u32, unsigned)
COPY(u64, u64)

template <typename T>
__device__ void add_assign_impl(T* __restrict__ a, const T* __restrict__ b, u64 n) {
    GRID_STRIDE(i, n) store(a, i, load(a, i) + load(b, i));
}
#define ADD_ASSIGN(SUF, T) \
    extern "C" __global__ void add_assign_##SUF(T* __restrict__ a, const T* __restrict__ b, u64 n) { add_assign_impl(a, b, n); }
FLOATS(ADD_ASSIGN)

extern "C" __global__ void add_assign_u64(u64* __restrict__ a, const u64* __restrict__ b, u64 n) {
    GRID_STRIDE(i, n) a[i] += b[i];
}
