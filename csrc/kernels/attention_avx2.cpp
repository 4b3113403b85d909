// AVX2 vector kernels of attention and the KV cache (x86-64 with AVX2 + FMA + F16C):
// f32 -> f16 conversion, and dot / axpy / their GQA-group forms in double over f32 or
// f16 operands, in the operation order kernels.h fixes for every ISA.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels.h"
#include "softmax_exp.h"

namespace tribit {
namespace {

void cvt_f32_f16_avx2(uint16_t* out, const float* in, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i*)(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) out[i] = fp32_to_fp16(in[i]);
}
// dot and axpy in double over an f32 or an f16 operand (widened on load, F16C):
// one body, so both do the same operations in the same order, which is the
// generic kernels' (kernels.h): lanes 0-3 and 4-7 of each 8-block in two
// accumulators, products exact in double, axpy without FMA.
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
inline double value(const float* p, int64_t i) { return double(p[i]); }
inline double value(const uint16_t* p, int64_t i) { return double(fp16_to_fp32(p[i])); }

template <typename B>
double dot_avx2(const double* a, const B* b, int64_t n) {
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 vb = load8(b + i);
        s0 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i), _mm256_cvtps_pd(_mm256_castps256_ps128(vb)), s0);
        s1 = _mm256_fmadd_pd(_mm256_loadu_pd(a + i + 4), _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1)), s1);
    }
    const __m256d t = _mm256_add_pd(s0, s1);  // p_j + p_{j+4}
    const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    double s = _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
    for (; i < n; i++) s += a[i] * value(b, i);
    return s;
}

template <typename X>
void axpy_avx2(double* y, double a, const X* x, int64_t n) {
    const __m256d va = _mm256_set1_pd(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 vx = load8(x + i);
        const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(vx));
        const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(vx, 1));
        _mm256_storeu_pd(y + i, _mm256_add_pd(_mm256_loadu_pd(y + i), _mm256_mul_pd(va, x0)));
        _mm256_storeu_pd(y + i + 4, _mm256_add_pd(_mm256_loadu_pd(y + i + 4), _mm256_mul_pd(va, x1)));
    }
    for (; i < n; i++) {
        const double ax = a * value(x, i);
        y[i] = y[i] + ax;
    }
}

// Four rows of a GQA group at a time against one cache row: the row is widened
// once, and 8 accumulators (two per query row, as in dot_avx2) are independent.
template <typename B>
void dot_rows_one(double* out, int64_t ldo, const double* a, int64_t lda, int64_t rows, const B* b, int64_t n) {
    int64_t g = 0;
    for (; g + 4 <= rows; g += 4) {
        const double* ar[4] = {a + g * lda, a + (g + 1) * lda, a + (g + 2) * lda, a + (g + 3) * lda};
        __m256d s0[4], s1[4];
        for (int r = 0; r < 4; r++) s0[r] = s1[r] = _mm256_setzero_pd();
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 vb = load8(b + i);
            const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(vb));
            const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(vb, 1));
            for (int r = 0; r < 4; r++) {
                s0[r] = _mm256_fmadd_pd(_mm256_loadu_pd(ar[r] + i), lo, s0[r]);
                s1[r] = _mm256_fmadd_pd(_mm256_loadu_pd(ar[r] + i + 4), hi, s1[r]);
            }
        }
        for (int r = 0; r < 4; r++) {
            const __m256d t = _mm256_add_pd(s0[r], s1[r]);
            const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
            double s = _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
            for (int64_t k = i; k < n; k++) s += ar[r][k] * value(b, k);
            out[(g + r) * ldo] = s;
        }
    }
    for (; g < rows; g++) out[g * ldo] = dot_avx2(a + g * lda, b, n);
}

template <typename B>
void dot_rows_avx2(double* out, int64_t ldo, const double* a, int64_t lda, int64_t rows, const B* b, int64_t ldb,
                   int64_t len, int64_t n) {
    for (int64_t t = 0; t < len; t++) dot_rows_one(out + t, ldo, a, lda, rows, b + t * ldb, n);
}

// 8 columns of up to 4 rows in registers (8 sums) while t runs over the cache
// rows; the tail columns one by one, each in the same t order.
template <typename X>
void wsum_rows_avx2(double* y, int64_t ldy, const double* coef, int64_t ldc, int64_t rows,
                    const X* x, int64_t ldx, int64_t len, int64_t n) {
    for (int64_t g0 = 0; g0 < rows; g0 += 4) {
        const int64_t nr = rows - g0 < 4 ? rows - g0 : 4;
        const double* cg = coef + g0 * ldc;
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256d s0[4], s1[4];
            for (int r = 0; r < 4; r++) s0[r] = s1[r] = _mm256_setzero_pd();
            for (int64_t t = 0; t < len; t++) {
                const __m256 vx = load8(x + t * ldx + i);
                const __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(vx));
                const __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(vx, 1));
                for (int r = 0; r < 4; r++) {
                    if (r >= nr) break;
                    const __m256d va = _mm256_set1_pd(cg[r * ldc + t]);
                    s0[r] = _mm256_add_pd(s0[r], _mm256_mul_pd(va, x0));
                    s1[r] = _mm256_add_pd(s1[r], _mm256_mul_pd(va, x1));
                }
            }
            for (int r = 0; r < nr; r++) {
                _mm256_storeu_pd(y + (g0 + r) * ldy + i, s0[r]);
                _mm256_storeu_pd(y + (g0 + r) * ldy + i + 4, s1[r]);
            }
        }
        for (; i < n; i++)
            for (int64_t r = 0; r < nr; r++) {
                double s = 0.0;
                for (int64_t t = 0; t < len; t++) {
                    const double ax = cg[r * ldc + t] * value(x + t * ldx, i);
                    s = s + ax;
                }
                y[(g0 + r) * ldy + i] = s;
            }
    }
}

// softmax_exp1 on 4 lanes: the same operations (2^k from k's bits via the 1.5 * 2^52
// trick: AVX2 has no double -> int64 conversion)
inline __m256d exp4(__m256d x) {
    const __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fmadd_pd(k, _mm256_set1_pd(-kLn2Hi), x);
    r = _mm256_fmadd_pd(k, _mm256_set1_pd(-kLn2Lo), r);
    __m256d p = _mm256_set1_pd(kExpPoly[0]);
    for (int i = 1; i < 14; i++) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(kExpPoly[i]));
    const __m256d magic = _mm256_set1_pd(6755399441055744.0);  // 1.5 * 2^52
    const __m256i ki = _mm256_sub_epi64(_mm256_castpd_si256(_mm256_add_pd(k, magic)), _mm256_castpd_si256(magic));
    const __m256d scale = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(ki, _mm256_set1_epi64x(1023)), 52));
    const __m256d e = _mm256_mul_pd(p, scale);
    // x < -708 or -inf: 0; NaN: x itself
    const __m256d low = _mm256_cmp_pd(x, _mm256_set1_pd(kExpMin), _CMP_NGE_UQ);
    const __m256d nan = _mm256_cmp_pd(x, x, _CMP_UNORD_Q);
    return _mm256_blendv_pd(_mm256_blendv_pd(e, _mm256_setzero_pd(), low), x, nan);
}

double softmax_exp_avx2(double* sc, int64_t len, double mx) {
    const __m256d vm = _mm256_set1_pd(mx);
    __m256d s0 = _mm256_setzero_pd(), s1 = s0;
    int64_t t = 0;
    for (; t + 8 <= len; t += 8) {
        const __m256d e0 = exp4(_mm256_sub_pd(_mm256_loadu_pd(sc + t), vm));
        const __m256d e1 = exp4(_mm256_sub_pd(_mm256_loadu_pd(sc + t + 4), vm));
        _mm256_storeu_pd(sc + t, e0);
        _mm256_storeu_pd(sc + t + 4, e1);
        s0 = _mm256_add_pd(s0, e0);
        s1 = _mm256_add_pd(s1, e1);
    }
    const __m256d u4 = _mm256_add_pd(s0, s1);  // p_j + p_{j+4}
    const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(u4), _mm256_extractf128_pd(u4, 1));
    return softmax_exp_tail(sc, t, len, mx, _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u)));
}

double dot_f32_avx2(const double* a, const float* b, int64_t n) { return dot_avx2(a, b, n); }
double dot_f16_avx2(const double* a, const uint16_t* b, int64_t n) { return dot_avx2(a, b, n); }
void axpy_f32_avx2(double* y, double a, const float* x, int64_t n) { axpy_avx2(y, a, x, n); }
void axpy_f16_avx2(double* y, double a, const uint16_t* x, int64_t n) { axpy_avx2(y, a, x, n); }
}  // namespace

void fill_attention_avx2(KernelTable& t) {
    t.softmax_exp = softmax_exp_avx2;
    t.cvt_f32_f16 = cvt_f32_f16_avx2;
    t.dot_f32 = dot_f32_avx2;
    t.axpy_f32 = axpy_f32_avx2;
    t.dot_f16 = dot_f16_avx2;
    t.axpy_f16 = axpy_f16_avx2;
    t.dot_rows_f32 = dot_rows_avx2<float>;
    t.dot_rows_f16 = dot_rows_avx2<uint16_t>;
    t.wsum_rows_f32 = wsum_rows_avx2<float>;
    t.wsum_rows_f16 = wsum_rows_avx2<uint16_t>;
}

}  // namespace tribit
