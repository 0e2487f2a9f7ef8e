// Softmax and log-softmax over rows (one CTA per row), as ops/softmax/cpu.rs. Attention uses the
// same kernels on its f32 score rows: `scale` multiplies the logits (1/√d) and the gradient, and
// with `causal_t > 0` row r sees only its first r % causal_t + 1 entries (the rest become 0).
#include "common.cuh"

template <typename T>
__device__ void softmax_impl(const T* x, T* y, u64 n, int log, float scale, u64 causal_t) {
    __shared__ float scratch[THREADS];
    const u64 base = blockIdx.x * n;
    const u64 visible = causal_t ? (blockIdx.x % causal_t) + 1 : n;
    float m = NEG_INF;
    for (u64 i = threadIdx.x; i < visible; i += blockDim.x) m = fmaxf(m, load(x, base + i));
    m = block_max(m, scratch);
    if (log) {
        float s = 0.0f;
        for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += expf(load(x, base + i) - m);
        const float lse = m + logf(block_sum(s, scratch));
        for (u64 i = threadIdx.x; i < n; i += blockDim.x) store(y, base + i, load(x, base + i) - lse);
        return;
    }
    const float shift = m * scale;
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < visible; i += blockDim.x) s += expf(load(x, base + i) * scale - shift);
    const float sum = block_sum(s, scratch);
    // every thread has read its entries (the sums above) before any entry is overwritten
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) store(y, base + i, i < visible ? expf(load(x, base + i) * scale - shift) / sum : 0.0f);
}

// dx = y ⊙ (g − Σ g·y)·scale (softmax) or g − exp(y)·Σ g (log-softmax); dx may be g.
template <typename T>
__device__ void softmax_bwd_impl(const T* y, const T* g, T* dx, u64 n, int log, float scale) {
    __shared__ float scratch[THREADS];
    const u64 base = blockIdx.x * n;
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += log ? load(g, base + i) : load(g, base + i) * load(y, base + i);
    const float total = block_sum(s, scratch);
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float yv = load(y, base + i), gv = load(g, base + i);
        store(dx, base + i, log ? gv - expf(yv) * total : yv * (gv - total) * scale);
    }
}

#define SOFTMAX(SUF, T)                                                                                                   \
    extern "C" __global__ void softmax_##SUF(const T* x, T* y, u64 n, int log, float scale, u64 causal_t) {                 \
        softmax_impl(x, y, n, log, scale, causal_t);                                                                        \
    }                                                                                                                       \
    extern "C" __global__ void softmax_bwd_##SUF(const T* y, const T* g, T* dx, u64 n, int log, float scale) {              \
        softmax_bwd_impl(y, g, dx, n, log, scale);                                                                          \
    }
FLOATS(SOFTMAX)
