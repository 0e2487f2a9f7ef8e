// Fused optimiser steps (one pass over parameter, gradient and state), f32. Every operation is
// an explicitly rounded intrinsic in optim/cpu.rs's order, so no multiply-add is contracted and
// the results are the CPU's bit for bit.
#include "common.cuh"

extern "C" __global__ void adamw_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ m, float* __restrict__ v, u64 n,
                                     float lr, float b1, float b2, float eps, float wd, float step_size, float bc2) {
    const float decay = __fsub_rn(1.0f, __fmul_rn(lr, wd));
    const float c1 = __fsub_rn(1.0f, b1), c2 = __fsub_rn(1.0f, b2);
    GRID_STRIDE(i, n) {
        const float gi = g[i];
        float pi = __fmul_rn(p[i], decay);
        const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(c1, gi));
        const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(c2, gi), gi));
        m[i] = mi;
        v[i] = vi;
        pi = __fsub_rn(pi, __fdiv_rn(__fmul_rn(step_size, mi), __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2), eps)));
        p[i] = pi;
    }
}

// d = g + wd·p; with momentum buf ← first ? d : momentum·buf + d and p ← p − lr·buf, else p ← p − lr·d.
extern "C" __global__ void sgd_f32(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ buf, u64 n, float lr, float wd,
                                   float momentum, int first, int has_buf) {
    GRID_STRIDE(i, n) {
        const float d = __fadd_rn(g[i], __fmul_rn(wd, p[i]));
        if (has_buf) {
            const float b = first ? d : __fadd_rn(__fmul_rn(momentum, buf[i]), d);
            buf[i] = b;
            p[i] = __fsub_rn(p[i], __fmul_rn(lr, b));
        } else {
            p[i] = __fsub_rn(p[i], __fmul_rn(lr, d));
        }
    }
}
