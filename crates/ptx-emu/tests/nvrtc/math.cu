// Elementwise math as NVRTC inlines it (no fast-math): expf, logf, erff (exact GELU), tanhf,
// powf, sinf/cosf (large arguments take the Payne-Hanek path through local memory and a
// global table), sqrtf, division, casts; and a __noinline__ device function reached by call.

__device__ __noinline__ float soft_clamp(float v, float limit) { return limit * tanhf(v / limit); }

extern "C" __global__ void unary_math_f32(const float* __restrict__ x, float* __restrict__ out, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    float* o = out + (size_t)i * 10;
    o[0] = expf(v);
    o[1] = logf(fabsf(v));
    o[2] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    o[3] = tanhf(v);
    o[4] = powf(fabsf(v), 1.7f);
    o[5] = sinf(v);
    o[6] = cosf(v);
    o[7] = sqrtf(fabsf(v));
    o[8] = 1.0f / (1.0f + expf(-v));
    o[9] = soft_clamp(v, 3.0f);
}

// Casts between integer and float types with the usual C semantics.
extern "C" __global__ void casts(const float* __restrict__ x, const long long* __restrict__ wide, int* __restrict__ as_int,
                                 unsigned* __restrict__ as_unsigned, float* __restrict__ from_wide, double* __restrict__ as_double,
                                 unsigned char* __restrict__ saturated, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    as_int[i] = (int)v;
    as_unsigned[i] = __float2uint_rn(v);
    from_wide[i] = (float)wide[i];
    as_double[i] = (double)v * 3.0;
    saturated[i] = (unsigned char)__saturatef(v) * 255;
}
