// Cross-entropy with label smoothing (one CTA per row, then one CTA for the f64 mean) and
// inverted dropout on the LWTA Philox stream (lwta_kernels::philox::uniform_at, bit for bit).
#include "common.cuh"

// Row losses −(1 − ε)·logp[t] − ε·mean(logp) and the softmax probabilities (f32).
template <typename T>
__device__ void ce_rows_impl(const T* x, const unsigned* targets, float* probs, float* row_loss, u64 c, float eps) {
    __shared__ float scratch[THREADS];
    const u64 base = blockIdx.x * c;
    float m = NEG_INF;
    for (u64 i = threadIdx.x; i < c; i += blockDim.x) m = fmaxf(m, load(x, base + i));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < c; i += blockDim.x) s += expf(load(x, base + i) - m);
    const float lse = m + logf(block_sum(s, scratch));
    float sl = 0.0f;
    for (u64 i = threadIdx.x; i < c; i += blockDim.x) {
        const float v = load(x, base + i);
        sl += v - lse;
        probs[base + i] = expf(v - lse);
    }
    const float mean_logp = block_sum(sl, scratch) / (float)c;
    if (threadIdx.x == 0) {
        const unsigned t = targets[blockIdx.x];
        row_loss[blockIdx.x] = -(1.0f - eps) * (load(x, base + t) - lse) - eps * mean_logp;
    }
}

extern "C" __global__ void ce_mean(const float* __restrict__ row_loss, float* __restrict__ loss, u64 n) {
    __shared__ double scratch[THREADS];
    double s = 0.0;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += (double)row_loss[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) loss[0] = (float)(s / (double)(n > 0 ? n : 1));
}

// (probs − target distribution)·g/n, g the loss gradient read on the device.
template <typename T>
__device__ void ce_bwd_impl(const float* probs, const unsigned* targets, const float* g, T* dx, u64 n, u64 c, float eps) {
    const float scale = g[0] / (float)n;
    GRID_STRIDE(i, n * c) {
        float p = probs[i] - eps / (float)c;
        if (i % c == targets[i / c]) p -= 1.0f - eps;
        store(dx, i, p * scale);
    }
}

// Philox4x32-10 (lwta_kernels::philox::philox4x32_10).
__device__ __forceinline__ uint4 philox(uint4 c, unsigned k0, unsigned k1) {
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const unsigned hi0 = __umulhi(c.x, 0xD2511F53u), lo0 = c.x * 0xD2511F53u;
        const unsigned hi1 = __umulhi(c.z, 0xCD9E8D57u), lo1 = c.z * 0xCD9E8D57u;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
    }
    return c;
}

// uniform_at(seed, offset, e): lane e % 4 of the counter group e / 4, 23 bits in [0, 1).
__device__ __forceinline__ float uniform_at(u64 seed, u64 offset, u64 e) {
    const u64 group = e / 4;
    const uint4 r = philox(make_uint4((unsigned)group, (unsigned)(group >> 32), (unsigned)offset, (unsigned)(offset >> 32)),
                           (unsigned)seed, (unsigned)(seed >> 32));
    const unsigned lane = (unsigned)(e % 4);
    const unsigned bits = lane == 0 ? r.x : lane == 1 ? r.y : lane == 2 ? r.z : r.w;
    return __fsub_rn(__uint_as_float((bits & 0x7fffffu) | 0x3f800000u), 1.0f);
}

template <typename T>
__device__ void dropout_impl(const T* x, T* y, u64 n, float p, float scale, u64 seed, u64 offset) {
    GRID_STRIDE(i, n) store(y, i, load(x, i) * (uniform_at(seed, offset, i) < p ? 0.0f : scale));
}

#define LOSS(SUF, T)                                                                                                        \
    extern "C" __global__ void ce_rows_##SUF(const T* __restrict__ x, const unsigned* __restrict__ targets, float* __restrict__ probs, \
                                             float* __restrict__ row_loss, u64 c, float eps) {                              \
        ce_rows_impl(x, targets, probs, row_loss, c, eps);                                                                  \
    }                                                                                                                       \
    extern "C" __global__ void ce_bwd_##SUF(const float* __restrict__ probs, const unsigned* __restrict__ targets,          \
                                            const float* __restrict__ g, T* __restrict__ dx, u64 n, u64 c, float eps) {     \
        ce_bwd_impl(probs, targets, g, dx, n, c, eps);                                                                      \
    }                                                                                                                       \
    extern "C" __global__ void dropout_##SUF(const T* __restrict__ x, T* __restrict__ y, u64 n, float p, float scale, u64 seed, \
                                             u64 offset) {                                                                  \
        dropout_impl(x, y, n, p, scale, seed, offset);                                                                      \
    }
FLOATS(LOSS)
