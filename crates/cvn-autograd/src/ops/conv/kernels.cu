// Convolution as im2col + GEMM (cuBLAS), as ops/conv/cpu.rs: the unfolded columns of `images`
// images are [C·kh·kw, images·Ho·Wo]; col2im is im2col's adjoint, written as a gather (each input
// pixel sums the columns that read it), so no atomics and a fixed summation order.
#include "common.cuh"

// Mirrors `ConvParams` in conv/cuda.rs.
struct Conv {
    u64 c, o, h, w, kh, kw, stride, pad, ho, wo;
};

template <typename T>
__device__ void im2col_impl(const T* x, T* col, Conv g, u64 images) {
    const u64 hwo = g.ho * g.wo, cols = images * hwo, kk = g.kh * g.kw;
    GRID_STRIDE(i, g.c * kk * cols) {
        const u64 r = i / cols, q = i % cols;
        const u64 ch = r / kk, ki = (r / g.kw) % g.kh, kj = r % g.kw;
        const u64 b = q / hwo, oy = (q % hwo) / g.wo, ox = q % g.wo;
        const long long iy = (long long)(oy * g.stride + ki) - (long long)g.pad;
        const long long ix = (long long)(ox * g.stride + kj) - (long long)g.pad;
        const bool inside = iy >= 0 && iy < (long long)g.h && ix >= 0 && ix < (long long)g.w;
        col[i] = inside ? x[((b * g.c + ch) * g.h + iy) * g.w + ix] : (T)0;
    }
}

template <typename T>
__device__ void col2im_impl(const float* col, T* dx, Conv g, u64 images) {
    const u64 hwo = g.ho * g.wo, cols = images * hwo;
    GRID_STRIDE(i, images * g.c * g.h * g.w) {
        const u64 ix = i % g.w, iy = (i / g.w) % g.h, ch = (i / (g.w * g.h)) % g.c, b = i / (g.w * g.h * g.c);
        float acc = 0.0f;
        for (u64 ki = 0; ki < g.kh; ++ki) {
            const long long ty = (long long)(iy + g.pad) - (long long)ki;
            if (ty < 0 || ty % g.stride != 0 || ty / g.stride >= (long long)g.ho) continue;
            for (u64 kj = 0; kj < g.kw; ++kj) {
                const long long tx = (long long)(ix + g.pad) - (long long)kj;
                if (tx < 0 || tx % g.stride != 0 || tx / g.stride >= (long long)g.wo) continue;
                const u64 r = (ch * g.kh + ki) * g.kw + kj;
                acc += col[r * cols + b * hwo + (ty / g.stride) * g.wo + tx / g.stride];
            }
        }
        store(dx, i, acc);
    }
}

// out[b, o, p] = tmp[o, b·HWo + p] + bias[o] for the chunk's images (out points at its first one).
template <typename T>
__device__ void conv_out_impl(const float* tmp, const T* bias, T* out, Conv g, u64 images, int has_bias) {
    const u64 hwo = g.ho * g.wo, cols = images * hwo;
    GRID_STRIDE(i, images * g.o * hwo) {
        const u64 p = i % hwo, oc = (i / hwo) % g.o, b = i / (hwo * g.o);
        store(out, i, tmp[oc * cols + b * hwo + p] + (has_bias ? load(bias, oc) : 0.0f));
    }
}

#define CONV(SUF, T)                                                                                                       \
    extern "C" __global__ void im2col_##SUF(const T* __restrict__ x, T* __restrict__ col, Conv g, u64 images) {             \
        im2col_impl(x, col, g, images);                                                                                    \
    }                                                                                                                      \
    extern "C" __global__ void col2im_##SUF(const float* __restrict__ col, T* __restrict__ dx, Conv g, u64 images) {       \
        col2im_impl(col, dx, g, images);                                                                                   \
    }                                                                                                                      \
    extern "C" __global__ void conv_out_##SUF(const float* __restrict__ tmp, const T* __restrict__ bias, T* __restrict__ out, Conv g, \
                                              u64 images, int has_bias) {                                                  \
        conv_out_impl(tmp, bias, out, g, images, has_bias);                                                                \
    }
CONV(f32, float)
CONV(bf16, bf16_t)
