// Gather/scatter with atomics: rows of src added into out[index[row]] (f32 atomicAdd), a u32
// histogram of the indices, and a per-bucket float maximum through an atomicCAS loop.

extern "C" __global__ void scatter_add_rows_f32(const float* __restrict__ src, const int* __restrict__ index, float* __restrict__ out,
                                                unsigned* __restrict__ histogram, int rows, int dim) {
    const int total = rows * dim;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
        const int row = i / dim, col = i % dim;
        const int target = index[row];
        atomicAdd(&out[(size_t)target * dim + col], src[i]);
        if (col == 0) atomicAdd(&histogram[target], 1u);
    }
}

__device__ float atomic_max_f32(float* address, float value) {
    int* bits = (int*)address;
    int old = *bits, assumed;
    do {
        assumed = old;
        if (__int_as_float(assumed) >= value) break;
        old = atomicCAS(bits, assumed, __float_as_int(value));
    } while (assumed != old);
    return __int_as_float(old);
}

extern "C" __global__ void bucket_max_f32(const float* __restrict__ values, const int* __restrict__ bucket, float* __restrict__ maxima,
                                          int* __restrict__ argmin_bucket, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomic_max_f32(&maxima[bucket[i]], values[i]);
    atomicMin(&argmin_bucket[bucket[i]], i);
}

// Gathers rows (embedding lookup) in bf16 storage, 4 elements (8 bytes) per access.
extern "C" __global__ void gather_rows_bf16(const unsigned short* __restrict__ table, const long long* __restrict__ ids,
                                            unsigned short* __restrict__ out, int rows, int dim) {
    const int quads = dim / 4;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * quads) return;
    const int row = i / quads, quad = i % quads;
    const uint2 v = *reinterpret_cast<const uint2*>(table + ids[row] * dim + 4 * quad);
    *reinterpret_cast<uint2*>(out + (size_t)row * dim + 4 * quad) = v;
}
