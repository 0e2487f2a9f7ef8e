// One AdamW step (decoupled weight decay), f32, with the bias corrections computed in the
// kernel (powf) and a bf16 copy of the updated weights written beside them.

extern "C" __global__ void adamw_f32(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v,
                                     unsigned short* __restrict__ param_bf16, int n, float lr, float beta1, float beta2, float eps,
                                     float weight_decay, int step) {
    const float correction1 = 1.0f - powf(beta1, (float)step);
    const float correction2 = 1.0f - powf(beta2, (float)step);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = grad[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float m_hat = mi / correction1;
        const float v_hat = vi / correction2;
        float p = param[i] * (1.0f - lr * weight_decay);
        p -= lr * m_hat / (sqrtf(v_hat) + eps);
        param[i] = p;
        unsigned short h;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(p));
        param_bf16[i] = h;
    }
}

// SGD with momentum and Nesterov, f64 (exercises the double path).
extern "C" __global__ void sgd_nesterov_f64(double* __restrict__ param, const double* __restrict__ grad, double* __restrict__ velocity, int n,
                                            double lr, double momentum) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const double vi = momentum * velocity[i] + grad[i];
    velocity[i] = vi;
    param[i] -= lr * (grad[i] + momentum * vi);
}
