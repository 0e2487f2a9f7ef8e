// Embedding rows: index_select gathers rows of a table; index_add (its adjoint) adds rows back
// into an f32 accumulator with atomics (the caller casts to bf16 where needed).
#include "common.cuh"

template <typename T>
__device__ void index_select_impl(const T* table, const unsigned* ids, T* out, u64 row, u64 n) {
    GRID_STRIDE(i, n) out[i] = table[(u64)ids[i / row] * row + i % row];
}

template <typename T>
__device__ void index_add_impl(const T* g, const unsigned* ids, float* acc, u64 row, u64 n) {
    GRID_STRIDE(i, n) atomicAdd(&acc[(u64)ids[i / row] * row + i % row], load(g, i));
}

#define INDEX(SUF, T)                                                                                                   \
    extern "C" __global__ void index_select_##SUF(const T* __restrict__ table, const unsigned* __restrict__ ids, T* __restrict__ out, \
                                                  u64 row, u64 n) {                                                     \
        index_select_impl(table, ids, out, row, n);                                                                     \
    }                                                                                                                   \
    extern "C" __global__ void index_add_##SUF(const T* __restrict__ g, const unsigned* __restrict__ ids, float* __restrict__ acc, \
                                               u64 row, u64 n) {                                                        \
        index_add_impl(g, ids, acc, row, n);                                                                            \
    }
FLOATS(INDEX)
