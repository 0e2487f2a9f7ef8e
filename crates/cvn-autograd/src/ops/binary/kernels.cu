// Broadcasting element-wise arithmetic: each input is read through its view of the output shape
// (stride 0 on broadcast dimensions), as the op layer's BroadcastLayout describes it.
#include "common.cuh"

// Op codes: 0 add, 1 sub, 2 mul, 3 div (cuda.rs's `op_code`).
__device__ __forceinline__ float apply(int op, float a, float b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a - b;
        case 2: return a * b;
        default: return a / b;
    }
}

// ∂op/∂a·g (side 0) or ∂op/∂b·g (side 1), as ops/binary/cpu.rs.
__device__ __forceinline__ float grad(int op, int side, float a, float b, float g) {
    if (op == 0) return g;
    if (op == 1) return side == 0 ? g : -g;
    if (op == 2) return side == 0 ? g * b : g * a;
    return side == 0 ? g / b : -g * a / (b * b);
}

template <typename T>
__device__ void binary_impl(const T* a, const T* b, T* out, const View& va, const View& vb, u64 n, int op) {
    GRID_STRIDE(i, n) store(out, i, apply(op, load(a, view_index(va, i)), load(b, view_index(vb, i))));
}

template <typename T>
__device__ void binary_grad_impl(const T* a, const T* b, const T* g, T* out, const View& va, const View& vb, u64 n, int op, int side) {
    GRID_STRIDE(i, n) store(out, i, grad(op, side, load(a, view_index(va, i)), load(b, view_index(vb, i)), load(g, i)));
}

// `out` may be `a` (in-place bias adds): each element is read before it is written, by its thread.
#define BINARY(SUF, T)                                                                                          \
    extern "C" __global__ void binary_##SUF(const T* a, const T* b, T* out, View va, View vb, u64 n, int op) {   \
        binary_impl(a, b, out, va, vb, n, op);                                                                   \
    }                                                                                                            \
    extern "C" __global__ void binary_grad_##SUF(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ g, \
                                                 T* __restrict__ out, View va, View vb, u64 n, int op, int side) { \
        binary_grad_impl(a, b, g, out, va, vb, n, op, side);                                                     \
    }
FLOATS(BINARY)
