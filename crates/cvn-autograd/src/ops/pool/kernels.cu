// Max-pool with −∞ padding (ops/pool/cpu.rs): the forward takes each window's first maximum;
// the backward is a gather (each input pixel sums the gradients of the windows whose first
// maximum it is), so no atomics.
#include "common.cuh"

// Mirrors `PoolParams` in pool/cuda.rs.
struct Pool {
    u64 planes, h, w, kernel, stride, pad, ho, wo;
};

// Index within the plane of the first maximum of window (oy, ox).
template <typename T>
__device__ u64 window_max(const T* plane, const Pool& g, u64 oy, u64 ox, float* best_out) {
    float best = NEG_INF;
    u64 at = 0;
    bool found = false;
    for (u64 ky = 0; ky < g.kernel; ++ky) {
        const long long iy = (long long)(oy * g.stride + ky) - (long long)g.pad;
        if (iy < 0 || iy >= (long long)g.h) continue;
        for (u64 kx = 0; kx < g.kernel; ++kx) {
            const long long ix = (long long)(ox * g.stride + kx) - (long long)g.pad;
            if (ix < 0 || ix >= (long long)g.w) continue;
            const u64 i = iy * g.w + ix;
            const float v = load(plane, i);
            if (!found || v > best) {
                best = v;
                at = i;
                found = true;
            }
        }
    }
    *best_out = best;
    return at;
}

template <typename T>
__device__ void max_pool_impl(const T* x, T* y, Pool g) {
    const u64 hwo = g.ho * g.wo;
    GRID_STRIDE(i, g.planes * hwo) {
        const u64 p = i / hwo, oy = (i % hwo) / g.wo, ox = i % g.wo;
        float best;
        window_max(x + p * g.h * g.w, g, oy, ox, &best);
        store(y, i, best);
    }
}

template <typename T>
__device__ void max_pool_bwd_impl(const T* x, const T* grad, T* dx, Pool g) {
    const u64 hw = g.h * g.w, hwo = g.ho * g.wo;
    GRID_STRIDE(i, g.planes * hw) {
        const u64 p = i / hw, at = i % hw, iy = at / g.w, ix = at % g.w;
        // windows oy with oy·stride − pad ≤ iy ≤ oy·stride − pad + kernel − 1
        const long long top = (long long)(iy + g.pad);
        const long long oy_lo = top - (long long)g.kernel + 1 <= 0 ? 0 : (top - (long long)g.kernel + (long long)g.stride) / (long long)g.stride;
        const long long oy_hi = min(top / (long long)g.stride, (long long)g.ho - 1);
        const long long left = (long long)(ix + g.pad);
        const long long ox_lo = left - (long long)g.kernel + 1 <= 0 ? 0 : (left - (long long)g.kernel + (long long)g.stride) / (long long)g.stride;
        const long long ox_hi = min(left / (long long)g.stride, (long long)g.wo - 1);
        float acc = 0.0f;
        float best;
        for (long long oy = oy_lo; oy <= oy_hi; ++oy)
            for (long long ox = ox_lo; ox <= ox_hi; ++ox)
                if (window_max(x + p * hw, g, oy, ox, &best) == at) acc += load(grad, p * hwo + oy * g.wo + ox);
        store(dx, i, acc);
    }
}

#define POOL(SUF, T)                                                                                                     \
    extern "C" __global__ void max_pool_##SUF(const T* __restrict__ x, T* __restrict__ y, Pool g) { max_pool_impl(x, y, g); } \
    extern "C" __global__ void max_pool_bwd_##SUF(const T* __restrict__ x, const T* __restrict__ grad, T* __restrict__ dx, Pool g) { \
        max_pool_bwd_impl(x, grad, dx, g);                                                                               \
    }
FLOATS(POOL)
