// sum_to: a tensor summed down to a shape of the same rank (reduced dimensions 1), times a scale,
// accumulated in f32. Output o reads input view_index(kept, o) + view_index(reduced, r) for every
// r < count. Two shapes: one CTA per output (long sums, tree-reduced) or one thread per output
// (short sums); both sum in a fixed order, so results are reproducible.
#include "common.cuh"

template <typename T>
__device__ void sum_to_block_impl(const T* x, T* y, const View& kept, const View& reduced, u64 count, float scale) {
    __shared__ float scratch[THREADS];
    const u64 o = blockIdx.x;
    const u64 base = view_index(kept, o);
    float acc = 0.0f;
    for (u64 r = threadIdx.x; r < count; r += blockDim.x) acc += load(x, base + view_index(reduced, r));
    const float total = block_sum(acc, scratch);
    if (threadIdx.x == 0) store(y, o, total * scale);
}

template <typename T>
__device__ void sum_to_thread_impl(const T* x, T* y, const View& kept, const View& reduced, u64 outputs, u64 count, float scale) {
    GRID_STRIDE(o, outputs) {
        const u64 base = view_index(kept, o);
        float acc = 0.0f;
        for (u64 r = 0; r < count; ++r) acc += load(x, base + view_index(reduced, r));
        store(y, o, acc * scale);
    }
}

#define SUM_TO(SUF, T)                                                                                                      \
    extern "C" __global__ void sum_to_block_##SUF(const T* __restrict__ x, T* __restrict__ y, View kept, View reduced, u64 count, \
                                                  float scale) {                                                            \
        sum_to_block_impl(x, y, kept, reduced, count, scale);                                                               \
    }                                                                                                                       \
    extern "C" __global__ void sum_to_thread_##SUF(const T* __restrict__ x, T* __restrict__ y, View kept, View reduced,       \
                                                   u64 outputs, u64 count, float scale) {                                   \
        sum_to_thread_impl(x, y, kept, reduced, outputs, count, scale);                                                     \
    }
FLOATS(SUM_TO)
