// Point-wise ops: x·a + b and the activations GELU (erf form), QuickGELU and ReLU with their
// derivatives (the formulas of ops/unary/cpu.rs; erff/expf are CUDA's, within 2 ulp).
#include "common.cuh"

#define FRAC_1_SQRT_2 0.70710678118654752f
#define INV_SQRT_2PI 0.3989422804014327f
#define QUICK_GELU_SLOPE 1.702f

// Op codes: 0 gelu, 1 quick_gelu, 2 relu (cuda.rs's `op_code`).
__device__ __forceinline__ float value(int op, float x) {
    if (op == 0) return 0.5f * x * (1.0f + erff(x * FRAC_1_SQRT_2));
    if (op == 1) return x / (1.0f + expf(-QUICK_GELU_SLOPE * x));
    return x < 0.0f ? 0.0f : x;  // NaN stays NaN
}

__device__ __forceinline__ float derivative(int op, float x) {
    if (op == 0) return 0.5f * (1.0f + erff(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * expf(-0.5f * x * x);
    if (op == 1) {
        const float e = expf(-QUICK_GELU_SLOPE * x);
        const float sig = 1.0f / (1.0f + e);
        return sig + QUICK_GELU_SLOPE * x * (sig * (e * sig));
    }
    return x > 0.0f ? 1.0f : 0.0f;
}

template <typename T>
__device__ void affine_impl(const T* x, T* y, u64 n, float a, float b) {
    GRID_STRIDE(i, n) store(y, i, load(x, i) * a + b);
}

template <typename T>
__device__ void unary_impl(const T* x, T* y, u64 n, int op) {
    GRID_STRIDE(i, n) store(y, i, value(op, load(x, i)));
}

template <typename T>
__device__ void unary_grad_impl(const T* x, const T* g, T* dx, u64 n, int op) {
    GRID_STRIDE(i, n) store(dx, i, load(g, i) * derivative(op, load(x, i)));
}

#define UNARY(SUF, T)                                                                                                     \
    extern "C" __global__ void affine_##SUF(const T* __restrict__ x, T* __restrict__ y, u64 n, float a, float b) {        \
        affine_impl(x, y, n, a, b);                                                                                       \
    }                                                                                                                     \
    extern "C" __global__ void unary_##SUF(const T* __restrict__ x, T* __restrict__ y, u64 n, int op) { unary_impl(x, y, n, op); } \
    extern "C" __global__ void unary_grad_##SUF(const T* __restrict__ x, const T* __restrict__ g, T* __restrict__ dx, u64 n, int op) { \
        unary_grad_impl(x, g, dx, n, op);                                                                                 \
    }
FLOATS(UNARY)
