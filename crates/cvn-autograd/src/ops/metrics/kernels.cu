// Device-side counters (u64 [1]): non-zero elements, equal winner indices, correct predictions.
// Each CTA counts its share and adds it with one 64-bit atomic.
#include "common.cuh"

__device__ __forceinline__ void add_count(u64* counter, u64 mine) {
    __shared__ u64 scratch[THREADS];
    const u64 total = block_sum(mine, scratch);
    if (threadIdx.x == 0 && total) atomicAdd(counter, total);
}

template <typename T>
__device__ void count_nonzero_impl(const T* x, u64* counter, u64 n) {
    u64 mine = 0;
    GRID_STRIDE(i, n) mine += load(x, i) != 0.0f;
    add_count(counter, mine);
}

// Rows of [n, c] logits whose first maximum is the row's label.
template <typename T>
__device__ void count_correct_impl(const T* logits, const unsigned* labels, u64* counter, u64 n, u64 c) {
    u64 mine = 0;
    GRID_STRIDE(r, n) {
        u64 best = 0;
        float bv = NEG_INF;
        for (u64 j = 0; j < c; ++j) {
            const float v = load(logits, r * c + j);
            if (v > bv) {
                bv = v;
                best = j;
            }
        }
        mine += best == labels[r];
    }
    add_count(counter, mine);
}

extern "C" __global__ void count_equal_u8(const unsigned char* __restrict__ a, const unsigned char* __restrict__ b, u64* counter, u64 n) {
    u64 mine = 0;
    GRID_STRIDE(i, n) mine += a[i] == b[i];
    add_count(counter, mine);
}

#define METRICS(SUF, T)                                                                                                     \
    extern "C" __global__ void count_nonzero_##SUF(const T* __restrict__ x, u64* counter, u64 n) { count_nonzero_impl(x, counter, n); } \
    extern "C" __global__ void count_correct_##SUF(const T* __restrict__ logits, const unsigned* __restrict__ labels, u64* counter, \
                                                   u64 n, u64 c) {                                                          \
        count_correct_impl(logits, labels, counter, n, c);                                                                  \
    }
FLOATS(METRICS)
