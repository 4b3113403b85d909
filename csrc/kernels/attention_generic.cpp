// Scalar vector kernels of attention and the KV cache: f32 -> f16 conversion, and
// dot / axpy / their GQA-group forms in double over f32 or f16 operands, in the
// operation order kernels.h fixes for every ISA. Always compiled, the twin every
// SIMD variant is tested against.
#include <cstdint>

#include "fp16_generic.h"
#include "kernels.h"
#include "softmax_exp.h"

namespace tribit {

static void cvt_f32_f16_generic(uint16_t* out, const float* in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = f32_to_f16_bits(in[i]);
}
static inline float widen(float v) { return v; }
static inline float widen(uint16_t h) { return f16_bits_to_f32(h); }

// The fixed order of dot_f32_fn (kernels.h); the products are exact in double.
template <typename B>
static double dot_generic(const double* a, const B* b, int64_t n) {
    double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) p[j] += a[i + j] * double(widen(b[i + j]));
    double s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
    for (; i < n; i++) s += a[i] * double(widen(b[i]));
    return s;
}
template <typename X>
static void axpy_generic(double* y, double a, const X* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const double ax = a * double(widen(x[i]));
        y[i] = y[i] + ax;
    }
}
static double dot_f32_generic(const double* a, const float* b, int64_t n) { return dot_generic(a, b, n); }
static double dot_f16_generic(const double* a, const uint16_t* b, int64_t n) { return dot_generic(a, b, n); }
static void axpy_f32_generic(double* y, double a, const float* x, int64_t n) { axpy_generic(y, a, x, n); }
static void axpy_f16_generic(double* y, double a, const uint16_t* x, int64_t n) { axpy_generic(y, a, x, n); }
template <typename X>
static void wsum_rows_generic(double* y, int64_t ldy, const double* coef, int64_t ldc, int64_t rows,
                              const X* x, int64_t ldx, int64_t len, int64_t n) {
    for (int64_t g = 0; g < rows; g++)
        for (int64_t i = 0; i < n; i++) y[g * ldy + i] = 0.0;
    for (int64_t t = 0; t < len; t++)
        for (int64_t g = 0; g < rows; g++) axpy_generic(y + g * ldy, coef[g * ldc + t], x + t * ldx, n);
}
template <typename B>
static void dot_rows_generic(double* out, int64_t ldo, const double* a, int64_t lda, int64_t rows, const B* b,
                             int64_t ldb, int64_t len, int64_t n) {
    for (int64_t t = 0; t < len; t++)
        for (int64_t g = 0; g < rows; g++) out[g * ldo + t] = dot_generic(a + g * lda, b + t * ldb, n);
}

static double softmax_exp_generic(double* sc, int64_t len, double mx) {
    double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t t = 0;
    for (; t + 8 <= len; t += 8)
        for (int j = 0; j < 8; j++) {
            sc[t + j] = softmax_exp1(sc[t + j] - mx);
            p[j] += sc[t + j];
        }
    const double s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
    return softmax_exp_tail(sc, t, len, mx, s);
}

void fill_attention_generic(KernelTable& t) {
    t.softmax_exp = softmax_exp_generic;
    t.cvt_f32_f16 = cvt_f32_f16_generic;
    t.dot_f32 = dot_f32_generic;
    t.axpy_f32 = axpy_f32_generic;
    t.dot_f16 = dot_f16_generic;
    t.axpy_f16 = axpy_f16_generic;
    t.dot_rows_f32 = dot_rows_generic<float>;
    t.dot_rows_f16 = dot_rows_generic<uint16_t>;
    t.wsum_rows_f32 = wsum_rows_generic<float>;
    t.wsum_rows_f16 = wsum_rows_generic<uint16_t>;
}

}  // namespace tribit
