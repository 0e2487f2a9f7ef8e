// im2col for a 2-D convolution (NCHW, one image), as Caffe writes it: column
// (c*kh + i)*kw + j of output pixel (oy, ox) holds x[c, oy*stride - pad + i*dilation, ...]
// or 0 outside the image; grid-stride over (channel, output pixel). And col2im (its adjoint),
// one thread per input pixel summing the columns that read it.

extern "C" __global__ void im2col_f32(const float* __restrict__ x, float* __restrict__ cols, int channels, int height, int width, int kh,
                                      int kw, int pad, int stride, int dilation, int out_h, int out_w) {
    const int total = channels * out_h * out_w;
    for (int index = blockIdx.x * blockDim.x + threadIdx.x; index < total; index += blockDim.x * gridDim.x) {
        const int ox = index % out_w;
        const int oy = (index / out_w) % out_h;
        const int c = index / (out_w * out_h);
        float* col = cols + ((size_t)c * kh * kw * out_h + oy) * out_w + ox;
        const float* img = x + (size_t)c * height * width;
        for (int i = 0; i < kh; ++i) {
            for (int j = 0; j < kw; ++j) {
                const int y = oy * stride - pad + i * dilation;
                const int xx = ox * stride - pad + j * dilation;
                *col = (y >= 0 && xx >= 0 && y < height && xx < width) ? img[y * width + xx] : 0.0f;
                col += out_h * out_w;
            }
        }
    }
}

extern "C" __global__ void col2im_f32(const float* __restrict__ cols, float* __restrict__ x, int channels, int height, int width, int kh,
                                      int kw, int pad, int stride, int out_h, int out_w) {
    const int total = channels * height * width;
    for (int index = blockIdx.x * blockDim.x + threadIdx.x; index < total; index += blockDim.x * gridDim.x) {
        const int px = index % width + pad;
        const int py = (index / width) % height + pad;
        const int c = index / (width * height);
        const int x_start = px < kw ? 0 : (px - kw) / stride + 1;
        const int x_end = min(px / stride + 1, out_w);
        const int y_start = py < kh ? 0 : (py - kh) / stride + 1;
        const int y_end = min(py / stride + 1, out_h);
        float sum = 0.0f;
        for (int oy = y_start; oy < y_end; ++oy) {
            for (int ox = x_start; ox < x_end; ++ox) {
                const int i = py - oy * stride, j = px - ox * stride;
                sum += cols[(((size_t)c * kh + i) * kw + j) * out_h * out_w + oy * out_w + ox];
            }
        }
        x[index] = sum;
    }
}

// 2x2 max pooling with stride 2 (NCHW), also writing the argmax within each window.
extern "C" __global__ void max_pool2x2_f32(const float* __restrict__ x, float* __restrict__ y, unsigned char* __restrict__ argmax, int planes,
                                           int height, int width) {
    const int oh = height / 2, ow = width / 2;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= planes * oh * ow) return;
    const int ox = i % ow, oy = (i / ow) % oh, plane = i / (ow * oh);
    const float* p = x + ((size_t)plane * height + 2 * oy) * width + 2 * ox;
    float best = p[0];
    unsigned char at = 0;
    const float others[3] = {p[1], p[width], p[width + 1]};
    for (int k = 0; k < 3; ++k) {
        if (others[k] > best) {
            best = others[k];
            at = (unsigned char)(k + 1);
        }
    }
    y[i] = best;
    argmax[i] = at;
}
