// Broadcasting binary ops over up to 4 dimensions: the output index is unravelled with 64-bit
// division and each operand is addressed through its own strides (0 on broadcast dimensions).
// The shape travels by value as one .param struct. Grid-stride loop.

struct Strided {
    int ndim;
    long long sizes[4];
    long long a_strides[4];
    long long b_strides[4];
};

__device__ __forceinline__ float apply(int op, float a, float b) {
    switch (op) {
        case 0: return a + b;
        case 1: return a * b;
        case 2: return a / b;
        default: return fmaxf(a, b);
    }
}

extern "C" __global__ void broadcast_binary_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ out,
                                                Strided shape, long long total, int op) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        long long rest = i, ia = 0, ib = 0;
        for (int d = shape.ndim - 1; d >= 0; --d) {
            const long long coord = rest % shape.sizes[d];
            rest /= shape.sizes[d];
            ia += coord * shape.a_strides[d];
            ib += coord * shape.b_strides[d];
        }
        out[i] = apply(op, a[ia], b[ib]);
    }
}
