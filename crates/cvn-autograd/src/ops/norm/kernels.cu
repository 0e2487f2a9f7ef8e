// Normalisation kernels (formulas of ops/norm/cpu.rs): layer norm over rows (one CTA per row),
// batch norm over NCHW channels (statistics and their backward sums in f64, one CTA per channel),
// and L2 normalisation of rows. Statistics are f32 whatever the storage type.
#include "common.cuh"

template <typename T>
__device__ void layer_norm_impl(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd, u64 n, float eps) {
    __shared__ float scratch[THREADS];
    const u64 base = blockIdx.x * n;
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += load(x, base + i);
    const float mu = block_sum(s, scratch) / (float)n;
    float q = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float d = load(x, base + i) - mu;
        q += d * d;
    }
    const float rs = 1.0f / sqrtf(block_sum(q, scratch) / (float)n + eps);
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) store(y, base + i, (load(x, base + i) - mu) * rs * load(w, i) + load(b, i));
    if (threadIdx.x == 0) {
        mean[blockIdx.x] = mu;
        rstd[blockIdx.x] = rs;
    }
}

// dx = rstd·(dxh − mean(dxh) − xh·mean(dxh·xh)), dxh = g·w
template <typename T>
__device__ void layer_norm_dx_impl(const T* x, const T* w, const float* mean, const float* rstd, const T* g, T* dx, u64 n) {
    __shared__ float scratch[THREADS];
    const u64 r = blockIdx.x, base = r * n;
    const float mu = mean[r], rs = rstd[r];
    float m1 = 0.0f, m2 = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float dxh = load(g, base + i) * load(w, i);
        m1 += dxh;
        m2 += dxh * ((load(x, base + i) - mu) * rs);
    }
    m1 = block_sum(m1, scratch) / (float)n;
    m2 = block_sum(m2, scratch) / (float)n;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float xh = (load(x, base + i) - mu) * rs;
        store(dx, base + i, rs * (load(g, base + i) * load(w, i) - m1 - xh * m2));
    }
}

// Partial column sums of g·xh and g over the rows of chunk blockIdx.y: partial_w/b[chunk·n + col].
template <typename T>
__device__ void layer_norm_wb_impl(const T* x, const float* mean, const float* rstd, const T* g, float* pw, float* pb, u64 rows, u64 n,
                                   u64 rows_per_chunk) {
    const u64 col = blockIdx.x * (u64)blockDim.x + threadIdx.x;
    if (col >= n) return;
    const u64 start = blockIdx.y * rows_per_chunk;
    const u64 end = min(rows, start + rows_per_chunk);
    float sw = 0.0f, sb = 0.0f;
    for (u64 r = start; r < end; ++r) {
        const float gv = load(g, r * n + col);
        sw += gv * ((load(x, r * n + col) - mean[r]) * rstd[r]);
        sb += gv;
    }
    pw[blockIdx.y * n + col] = sw;
    pb[blockIdx.y * n + col] = sb;
}

// Per channel: mean and biased variance, accumulated in f64.
template <typename T>
__device__ void bn_stats_impl(const T* x, float* mean, float* var, u64 n, u64 c, u64 hw) {
    __shared__ double scratch[THREADS];
    const u64 ch = blockIdx.x, count = n * hw;
    double s = 0.0, s2 = 0.0;
    for (u64 k = threadIdx.x; k < count; k += blockDim.x) {
        const double v = load(x, ((k / hw) * c + ch) * hw + k % hw);
        s += v;
        s2 += v * v;
    }
    s = block_sum(s, scratch);
    s2 = block_sum(s2, scratch);
    if (threadIdx.x == 0) {
        const double m = s / (double)count;
        mean[ch] = (float)m;
        var[ch] = (float)fmax(s2 / (double)count - m * m, 0.0);
    }
}

template <typename T>
__device__ void bn_apply_impl(const T* x, const T* w, const T* b, const float* mean, const float* var, T* y, u64 c, u64 hw, u64 total, float eps) {
    GRID_STRIDE(i, total) {
        const u64 ch = (i / hw) % c;
        const float rs = 1.0f / sqrtf(var[ch] + eps);
        const float scale = load(w, ch) * rs, shift = load(b, ch) - mean[ch] * load(w, ch) * rs;
        store(y, i, load(x, i) * scale + shift);
    }
}

// Per channel Σg and Σg·x̂ (f64), written as f32 sums[ch] and sums[c + ch].
template <typename T>
__device__ void bn_sums_impl(const T* x, const T* g, const float* mean, const float* var, float* sums, u64 n, u64 c, u64 hw, float eps) {
    __shared__ double scratch[THREADS];
    const u64 ch = blockIdx.x, count = n * hw;
    const float mu = mean[ch], rs = 1.0f / sqrtf(var[ch] + eps);
    double sg = 0.0, sgx = 0.0;
    for (u64 k = threadIdx.x; k < count; k += blockDim.x) {
        const u64 i = ((k / hw) * c + ch) * hw + k % hw;
        const float gv = load(g, i);
        sg += (double)gv;
        sgx += (double)gv * (double)((load(x, i) - mu) * rs);
    }
    sg = block_sum(sg, scratch);
    sgx = block_sum(sgx, scratch);
    if (threadIdx.x == 0) {
        sums[ch] = (float)sg;
        sums[c + ch] = (float)sgx;
    }
}

template <typename T>
__device__ void bn_dx_impl(const T* x, const T* g, const T* w, const float* mean, const float* var, const float* sums, T* dx, u64 c, u64 hw,
                           u64 total, float eps, int training, float count) {
    GRID_STRIDE(i, total) {
        const u64 ch = (i / hw) % c;
        const float rs = 1.0f / sqrtf(var[ch] + eps);
        const float k = load(w, ch) * rs, gv = load(g, i);
        if (training) {
            const float xh = (load(x, i) - mean[ch]) * rs;
            store(dx, i, k * (gv - sums[ch] / count - xh * sums[c + ch] / count));
        } else {
            store(dx, i, k * gv);
        }
    }
}

// running = (1 − momentum)·running + momentum·batch, the variance made unbiased first (in f64).
template <typename T>
__device__ void bn_running_impl(T* rm, T* rv, const float* mean, const float* var, u64 c, float momentum, double unbiased) {
    GRID_STRIDE(i, c) {
        store(rm, i, (1.0f - momentum) * load(rm, i) + momentum * mean[i]);
        store(rv, i, (1.0f - momentum) * load(rv, i) + momentum * (float)((double)var[i] * unbiased));
    }
}

template <typename T>
__device__ void l2_impl(const T* x, T* y, float* norms, u64 n) {
    __shared__ float scratch[THREADS];
    const u64 base = blockIdx.x * n;
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = load(x, base + i);
        s += v * v;
    }
    const float norm = fmaxf(sqrtf(block_sum(s, scratch)), 1e-12f);
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) store(y, base + i, load(x, base + i) / norm);
    if (threadIdx.x == 0) norms[blockIdx.x] = norm;
}

// dx = (g − y·(g·y)) / ‖x‖
template <typename T>
__device__ void l2_bwd_impl(const T* y, const float* norms, const T* g, T* dx, u64 n) {
    __shared__ float scratch[THREADS];
    const u64 base = blockIdx.x * n;
    float s = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) s += load(y, base + i) * load(g, base + i);
    const float dot = block_sum(s, scratch), norm = norms[blockIdx.x];
    for (u64 i = threadIdx.x; i < n; i += blockDim.x) store(dx, base + i, (load(g, base + i) - load(y, base + i) * dot) / norm);
}

#define NORM(SUF, T)                                                                                                            \
    extern "C" __global__ void layer_norm_##SUF(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,        \
                                                T* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, u64 n, float eps) { \
        layer_norm_impl(x, w, b, y, mean, rstd, n, eps);                                                                          \
    }                                                                                                                             \
    extern "C" __global__ void layer_norm_dx_##SUF(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ mean, \
                                                   const float* __restrict__ rstd, const T* __restrict__ g, T* __restrict__ dx, u64 n) { \
        layer_norm_dx_impl(x, w, mean, rstd, g, dx, n);                                                                           \
    }                                                                                                                             \
    extern "C" __global__ void layer_norm_wb_##SUF(const T* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd, \
                                                   const T* __restrict__ g, float* __restrict__ pw, float* __restrict__ pb, u64 rows, u64 n, \
                                                   u64 rows_per_chunk) {                                                          \
        layer_norm_wb_impl(x, mean, rstd, g, pw, pb, rows, n, rows_per_chunk);                                                    \
    }                                                                                                                             \
    extern "C" __global__ void bn_stats_##SUF(const T* __restrict__ x, float* __restrict__ mean, float* __restrict__ var, u64 n, u64 c, \
                                              u64 hw) {                                                                           \
        bn_stats_impl(x, mean, var, n, c, hw);                                                                                    \
    }                                                                                                                             \
    extern "C" __global__ void bn_apply_##SUF(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,          \
                                              const float* __restrict__ mean, const float* __restrict__ var, T* __restrict__ y, u64 c, \
                                              u64 hw, u64 total, float eps) {                                                     \
        bn_apply_impl(x, w, b, mean, var, y, c, hw, total, eps);                                                                  \
    }                                                                                                                             \
    extern "C" __global__ void bn_sums_##SUF(const T* __restrict__ x, const T* __restrict__ g, const float* __restrict__ mean,     \
                                             const float* __restrict__ var, float* __restrict__ sums, u64 n, u64 c, u64 hw, float eps) { \
        bn_sums_impl(x, g, mean, var, sums, n, c, hw, eps);                                                                       \
    }                                                                                                                             \
    extern "C" __global__ void bn_dx_##SUF(const T* __restrict__ x, const T* __restrict__ g, const T* __restrict__ w,             \
                                           const float* __restrict__ mean, const float* __restrict__ var, const float* __restrict__ sums, \
                                           T* __restrict__ dx, u64 c, u64 hw, u64 total, float eps, int training, float count) {  \
        bn_dx_impl(x, g, w, mean, var, sums, dx, c, hw, total, eps, training, count);                                             \
    }                                                                                                                             \
    extern "C" __global__ void bn_running_##SUF(T* __restrict__ rm, T* __restrict__ rv, const float* __restrict__ mean,            \
                                                const float* __restrict__ var, u64 c, float momentum, double unbiased) {          \
        bn_running_impl(rm, rv, mean, var, c, momentum, unbiased);                                                                \
    }                                                                                                                             \
    extern "C" __global__ void l2_normalize_##SUF(const T* __restrict__ x, T* __restrict__ y, float* __restrict__ norms, u64 n) {  \
        l2_impl(x, y, norms, n);                                                                                                  \
    }                                                                                                                             \
    extern "C" __global__ void l2_normalize_bwd_##SUF(const T* __restrict__ y, const float* __restrict__ norms, const T* __restrict__ g, \
                                                      T* __restrict__ dx, u64 n) {                                               \
        l2_bwd_impl(y, norms, g, dx, n);                                                                                          \
    }
FLOATS(NORM)
