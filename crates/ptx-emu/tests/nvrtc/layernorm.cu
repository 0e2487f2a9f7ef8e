// Layer norm over the last dimension, f32: one CTA of 128 threads per row; mean and variance
// (two passes, from the data held in registers and shared memory) reduced by shuffles.

__device__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

__device__ float block_sum(float v, float* scratch) {
    v = warp_sum(v);
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = v;
    __syncthreads();
    float total = 0.0f;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += scratch[w];
    __syncthreads();
    return total;
}

extern "C" __global__ void layer_norm_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                          float* __restrict__ y, float* __restrict__ mean_out, float* __restrict__ rstd_out, int cols, float eps) {
    __shared__ float scratch[32];
    const float* row = x + (size_t)blockIdx.x * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += row[c];
    const float mean = block_sum(sum, scratch) / cols;
    float squares = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float d = row[c] - mean;
        squares = fmaf(d, d, squares);
    }
    const float rstd = rsqrtf(block_sum(squares, scratch) / cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        y[(size_t)blockIdx.x * cols + c] = (row[c] - mean) * rstd * gamma[c] + beta[c];
    if (threadIdx.x == 0) {
        mean_out[blockIdx.x] = mean;
        rstd_out[blockIdx.x] = rstd;
    }
}
