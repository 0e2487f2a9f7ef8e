// Row softmax (f32) and log-softmax (bf16 storage, f32 math): one CTA per row, the row's maximum
// and sum reduced by warp shuffles and then across warps through shared memory.

__device__ __forceinline__ float bf16_to_f32(unsigned short h) {
    float f;
    asm("{ mov.b32 %0, {0,%1};}\n" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short f32_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(h) : "f"(f));
    return h;
}

__device__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

__device__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
    return __shfl_sync(0xffffffffu, v, 0);
}

// Every thread gets the CTA's maximum (or sum); blockDim.x is a multiple of 32, at most 1024.
__device__ float block_reduce(float v, bool take_max, float* scratch) {
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = take_max ? warp_max(v) : warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : (take_max ? -__int_as_float(0x7f800000) : 0.0f);
    v = take_max ? warp_max(v) : warp_sum(v);
    __syncthreads();  // scratch is reused by the next reduction
    return v;
}

extern "C" __global__ void softmax_rows_f32(const float* __restrict__ x, float* __restrict__ y, int cols) {
    __shared__ float scratch[32];
    const float* row = x + (size_t)blockIdx.x * cols;
    float* out = y + (size_t)blockIdx.x * cols;
    float m = -__int_as_float(0x7f800000);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, row[c]);
    m = block_reduce(m, true, scratch);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(row[c] - m);
    s = block_reduce(s, false, scratch);
    const float inv = 1.0f / s;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = expf(row[c] - m) * inv;
}

extern "C" __global__ void log_softmax_rows_bf16(const unsigned short* __restrict__ x, unsigned short* __restrict__ y, int cols) {
    __shared__ float scratch[32];
    const unsigned short* row = x + (size_t)blockIdx.x * cols;
    unsigned short* out = y + (size_t)blockIdx.x * cols;
    float m = -__int_as_float(0x7f800000);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, bf16_to_f32(row[c]));
    m = block_reduce(m, true, scratch);
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(bf16_to_f32(row[c]) - m);
    s = block_reduce(s, false, scratch);
    const float log_sum = logf(s);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) out[c] = f32_to_bf16(bf16_to_f32(row[c]) - m - log_sum);
}

// Inclusive prefix sums of each row (one warp per row, cols <= 32 * 32), with shfl.up and
// a ballot-counted number of negative inputs per row.
extern "C" __global__ void cumsum_rows_f32(const float* __restrict__ x, float* __restrict__ y, unsigned* __restrict__ negatives, int rows, int cols) {
    const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const unsigned lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together
    float carry = 0.0f;
    unsigned count = 0;
    for (int base = 0; base < cols; base += 32) {
        const int c = base + lane;
        float v = c < cols ? x[(size_t)row * cols + c] : 0.0f;
        count += __popc(__ballot_sync(0xffffffffu, v < 0.0f));
        for (int offset = 1; offset < 32; offset <<= 1) {
            const float up = __shfl_up_sync(0xffffffffu, v, offset);
            if (lane >= offset) v += up;
        }
        if (c < cols) y[(size_t)row * cols + c] = v + carry;
        carry += __shfl_sync(0xffffffffu, v, 31);
    }
    if (lane == 0) negatives[row] = count;
}
