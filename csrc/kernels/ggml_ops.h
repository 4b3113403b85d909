// llama.cpp's float32 arithmetic for the group_mode "llama" forward (kernels.h,
// "llama.cpp's float ops"): the operations of mainline ggml's x86 CPU backend as its
// AVX-512 build runs them (llama-cpp-python 0.3.36, GCC 12, -march=native), written as
// portable C++ in the same order. Every operation is one IEEE float32 rounding (a
// product, a sum, or an FMA, which std::fma computes exactly rounded whether or not the
// CPU has FMA), so this one source, compiled by each ISA's file with that ISA's flags
// (ggml_<isa>.cpp; the compiler vectorizes the lane loops), gives the same bits on every
// ISA. -ffp-contract=off (CMakeLists.txt) keeps every a * b + c below two roundings.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace tribit {
namespace ggml_ops {

// v[0] + ... + v[15] as _mm512_reduce_add_ps (GCC) sums them: by halves, lane l with l + 8,
// then l with l + 4, then 0 + 2 and 1 + 3, then the two.
static inline float sum16(float* v) {
    for (int l = 0; l < 8; l++) v[l] = v[l + 8] + v[l];
    for (int l = 0; l < 4; l++) v[l] = v[l + 4] + v[l];
    return (v[0] + v[2]) + (v[1] + v[3]);
}

// ggml_vec_dot_f32 (AVX-512): accumulator a[i % 64] += x[i] * y[i] by FMA over the whole
// 64-blocks (4 registers of 16 lanes), then (a0 + a2) + (a1 + a3) lane-wise and sum16; the
// tail (n % 64) as GCC vectorized its scalar loop `s += x[i] * y[i]` with FMA contraction:
// groups of 16, then one of 8, of rounded products added in order, the rest fused.
static inline float dot64(const float* x, const float* y, int64_t n) {
    float a[64] = {};
    const int64_t np = n & ~int64_t(63);
    for (int64_t i = 0; i < np; i += 64)
        for (int l = 0; l < 64; l++) a[l] = std::fma(x[i + l], y[i + l], a[l]);
    for (int l = 0; l < 16; l++) {
        a[l] = a[l] + a[l + 32];
        a[l + 16] = a[l + 16] + a[l + 48];
    }
    for (int l = 0; l < 16; l++) a[l] = a[l] + a[l + 16];
    float s = sum16(a);
    const int64_t c = n - np;
    int64_t plain = c >= 16 ? c / 16 * 16 : 0;
    if (c - plain >= 8) plain += 8;
    int64_t i = np;
    for (; i < np + plain; i++) s = s + x[i] * y[i];
    for (; i < n; i++) s = std::fma(x[i], y[i], s);
    return s;
}

// Dims of the value rows one pass of wsum accumulates (64 x 32 floats of lanes: 8 KiB).
constexpr int64_t kWsumChunk = 32;

// y[i] = sum over t < len of coef[t] * x[t * ldx + i], i < n, in one of ggml's two orders:
// lanes 64, ggml_vec_dot_f32's over t (dot64's, the tail never reached: llama.cpp's KV
// length is a multiple of 256); lanes 16, llamafile's tinyBLAS<16> (one 16-lane FMA
// accumulator, t in lane t % 16, then sum16).
static inline void wsum(float* y, const float* coef, const float* x, int64_t ldx, int64_t len, int64_t n,
                        int lanes) {
    for (int64_t i0 = 0; i0 < n; i0 += kWsumChunk) {
        const int64_t w = n - i0 < kWsumChunk ? n - i0 : kWsumChunk;
        float a[64][kWsumChunk] = {};
        for (int64_t t = 0; t < len; t++) {
            float* at = a[lanes == 16 ? t % 16 : t % 64];
            const float c = coef[t];
            const float* xt = x + t * ldx + i0;
            for (int64_t ii = 0; ii < w; ii++) at[ii] = std::fma(xt[ii], c, at[ii]);
        }
        for (int64_t ii = 0; ii < w; ii++) {
            float v[16];
            for (int l = 0; l < 16; l++) {
                v[l] = a[l][ii];
                if (lanes != 16) v[l] = (v[l] + a[l + 32][ii]) + (a[l + 16][ii] + a[l + 48][ii]);
            }
            y[i0 + ii] = sum16(v);
        }
    }
}

// 2^k for k in [-126, 127], exact
static inline float pow2i(int k) {
    const uint32_t u = uint32_t(k + 127) << 23;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// ggml_v_expf, the AVX-512 variant (ARM's optimized-routines expf): n = round(x / ln2) by
// the 1.5 * 2^23 shift, b = x - n ln2 in two FMA steps, a degree-5 polynomial j by FMA, and
// vscalefps(j, n) = j * 2^n rounded once (here (j * 2^(n/2)) * 2^(n - n/2): the first
// product is exact, j being near 1); |n| > 192 gives 0 (n <= 0) or infinity.
static inline float expf_ggml(float x) {
    const float r = 0x1.8p23f;
    const float z = std::fma(x, 0x1.715476p+0f, r);
    const float n = z - r;
    const float b = std::fma(-n, 0x1.7f7d1cp-20f, std::fma(-n, 0x1.62e4p-1f, x));
    const float u = b * b;
    const float j = std::fma(std::fma(std::fma(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u,
                                      std::fma(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)),
                             u, std::fma(0x1.ffffecp-1f, b, 1.0f));
    const bool in_range = std::fabs(n) <= 192.0f;  // false for NaN too: j is NaN then
    const int k = in_range ? int(n) : 0;
    const float res = (j * pow2i(k / 2)) * pow2i(k - k / 2);
    if (!in_range && !(n != n)) return n <= 0.0f ? 0.0f : INFINITY;
    return res;
}

}  // namespace ggml_ops

// The kernels of kernels.h's "llama.cpp's float ops", from the functions above.
static void ggml_dot_rows_impl(float* out, const float* a, int64_t lda, int64_t rows, const float* b, int64_t n) {
    for (int64_t g = 0; g < rows; g++) out[g] = ggml_ops::dot64(a + g * lda, b, n);
}

static void ggml_wsum_rows_impl(float* y, int64_t ldy, const float* coef, int64_t ldc, int64_t rows,
                                const float* x, int64_t ldx, int64_t len, int64_t n, int lanes) {
    for (int64_t g = 0; g < rows; g++) ggml_ops::wsum(y + g * ldy, coef + g * ldc, x, ldx, len, n, lanes);
}

static double ggml_soft_max_impl(float* y, const float* x, int64_t n, float max) {
    double sum = 0.0;
    for (int64_t c = 0; c < n; c += 16) {
        float v[16];
        for (int l = 0; l < 16; l++) v[l] = c + l < n ? ggml_ops::expf_ggml(x[c + l] - max) : 0.0f;
        for (int l = 0; l < 16 && c + l < n; l++) y[c + l] = v[l];
        sum += double(ggml_ops::sum16(v));
    }
    return sum;
}

static void ggml_swiglu_impl(float* y, const float* x, const float* g, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            const float v = x[i + l];
            y[i + l] = (v / (1.0f + ggml_ops::expf_ggml(0.0f - v))) * g[i + l];
        }
    for (; i < n; i++) y[i] = (x[i] / (1.0f + std::exp(-x[i]))) * g[i];  // ggml_silu_f32: libm expf
}

}  // namespace tribit
