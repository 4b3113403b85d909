// AVX-512 vector kernels of attention: dot / axpy and their GQA-group forms in double
// over f32 or f16 operands, in the operation order kernels.h fixes for every ISA. One
// zmm holds the eight partial sums p_0..p_7 of a dot (the generic kernel's), so a dot
// is one FMA per 8 elements instead of the AVX2 kernel's two; products of two floats
// are exact in double, so FMA and multiply-then-add give the same sums. axpy and the
// weighted sums keep the product rounded before the add (coefficients are doubles).
// f32 -> f16 conversion comes from AVX2.
#include <immintrin.h>

#include "kernels.h"
#include "softmax_exp.h"

namespace tribit {
namespace {

inline __m512d load8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
inline __m512d load8(const uint16_t* p) {
    return _mm512_cvtps_pd(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)));
}
inline double value(const float* p, int64_t i) { return double(p[i]); }
inline double value(const uint16_t* p, int64_t i) { return double(fp16_to_fp32(p[i])); }

// ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)): the AVX2 kernel's reduction
inline double reduce8(__m512d p) {
    const __m256d t = _mm256_add_pd(_mm512_castpd512_pd256(p), _mm512_extractf64x4_pd(p, 1));  // p_j + p_{j+4}
    const __m128d u = _mm_add_pd(_mm256_castpd256_pd128(t), _mm256_extractf128_pd(t, 1));
    return _mm_cvtsd_f64(u) + _mm_cvtsd_f64(_mm_unpackhi_pd(u, u));
}

template <typename B>
double dot_avx512(const double* a, const B* b, int64_t n) {
    __m512d s = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) s = _mm512_fmadd_pd(_mm512_loadu_pd(a + i), load8(b + i), s);
    double r = reduce8(s);
    for (; i < n; i++) r += a[i] * value(b, i);
    return r;
}

template <typename X>
void axpy_avx512(double* y, double a, const X* x, int64_t n) {
    const __m512d va = _mm512_set1_pd(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_pd(y + i, _mm512_add_pd(_mm512_loadu_pd(y + i), _mm512_mul_pd(va, load8(x + i))));
    for (; i < n; i++) {
        const double ax = a * value(x, i);
        y[i] = y[i] + ax;
    }
}

// Tiles of R query rows x C cache rows, one chain each (up to 16 independent FMAs in
// flight): each cache row widened once per tile, each query load feeding C rows.
template <int R, int C, typename B>
inline void dot_tile(double* out, int64_t ldo, const double* a, int64_t lda, const B* b, int64_t ldb, int64_t n) {
    __m512d s[R][C];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) s[r][c] = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m512d vb[C];
        for (int c = 0; c < C; c++) vb[c] = load8(b + c * ldb + i);
        for (int r = 0; r < R; r++) {
            const __m512d va = _mm512_loadu_pd(a + r * lda + i);
            for (int c = 0; c < C; c++) s[r][c] = _mm512_fmadd_pd(va, vb[c], s[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) {
            double v = reduce8(s[r][c]);
            for (int64_t k = i; k < n; k++) v += a[r * lda + k] * value(b + c * ldb, k);
            out[r * ldo + c] = v;
        }
}

template <int R, typename B>
inline void dot_rows_r(double* out, int64_t ldo, const double* a, int64_t lda, const B* b, int64_t ldb, int64_t len,
                       int64_t n) {
    constexpr int C = R <= 2 ? 4 : 16 / R;  // cache rows per tile
    int64_t t = 0;
    for (; t + C <= len; t += C) dot_tile<R, C>(out + t, ldo, a, lda, b + t * ldb, ldb, n);
    for (; t < len; t++) dot_tile<R, 1>(out + t, ldo, a, lda, b + t * ldb, ldb, n);
}

template <typename B>
void dot_rows_avx512(double* out, int64_t ldo, const double* a, int64_t lda, int64_t rows, const B* b, int64_t ldb,
                     int64_t len, int64_t n) {
    int64_t g = 0;
    for (; g + 4 <= rows; g += 4) dot_rows_r<4>(out + g * ldo, ldo, a + g * lda, lda, b, ldb, len, n);
    switch (rows - g) {
        case 3: dot_rows_r<3>(out + g * ldo, ldo, a + g * lda, lda, b, ldb, len, n); break;
        case 2: dot_rows_r<2>(out + g * ldo, ldo, a + g * lda, lda, b, ldb, len, n); break;
        case 1: dot_rows_r<1>(out + g * ldo, ldo, a + g * lda, lda, b, ldb, len, n); break;
        default: break;
    }
}

// C x 8 columns of R rows in registers (R * C independent sums, each value row widened
// once for R rows) while t runs over the cache rows, each (row, column) sum in t order.
template <int R, int C, typename X>
inline void wsum_tile(double* y, int64_t ldy, const double* coef, int64_t ldc, const X* x, int64_t ldx,
                      int64_t len) {
    __m512d s[R][C];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) s[r][c] = _mm512_setzero_pd();
    for (int64_t t = 0; t < len; t++) {
        __m512d xv[C];
        for (int c = 0; c < C; c++) xv[c] = load8(x + t * ldx + 8 * c);
        for (int r = 0; r < R; r++) {
            const __m512d va = _mm512_set1_pd(coef[r * ldc + t]);
            for (int c = 0; c < C; c++) s[r][c] = _mm512_add_pd(s[r][c], _mm512_mul_pd(va, xv[c]));
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++) _mm512_storeu_pd(y + r * ldy + 8 * c, s[r][c]);
}

template <int R, typename X>
inline void wsum_r(double* y, int64_t ldy, const double* coef, int64_t ldc, const X* x, int64_t ldx, int64_t len,
                   int64_t n) {
    constexpr int C = 16 / R < 4 ? 16 / R : 4;  // 8-column vectors per tile
    int64_t i = 0;
    for (; i + 8 * C <= n; i += 8 * C) wsum_tile<R, C>(y + i, ldy, coef, ldc, x + i, ldx, len);
    for (; i + 8 <= n; i += 8) wsum_tile<R, 1>(y + i, ldy, coef, ldc, x + i, ldx, len);
    for (; i < n; i++)
        for (int64_t r = 0; r < R; r++) {
            double s = 0.0;
            for (int64_t t = 0; t < len; t++) {
                const double ax = coef[r * ldc + t] * value(x + t * ldx, i);
                s = s + ax;
            }
            y[r * ldy + i] = s;
        }
}

template <typename X>
void wsum_rows_avx512(double* y, int64_t ldy, const double* coef, int64_t ldc, int64_t rows, const X* x,
                      int64_t ldx, int64_t len, int64_t n) {
    int64_t g = 0;
    for (; g + 8 <= rows; g += 8) wsum_r<8>(y + g * ldy, ldy, coef + g * ldc, ldc, x, ldx, len, n);
    for (; g + 4 <= rows; g += 4) wsum_r<4>(y + g * ldy, ldy, coef + g * ldc, ldc, x, ldx, len, n);
    switch (rows - g) {
        case 3: wsum_r<3>(y + g * ldy, ldy, coef + g * ldc, ldc, x, ldx, len, n); break;
        case 2: wsum_r<2>(y + g * ldy, ldy, coef + g * ldc, ldc, x, ldx, len, n); break;
        case 1: wsum_r<1>(y + g * ldy, ldy, coef + g * ldc, ldc, x, ldx, len, n); break;
        default: break;
    }
}

// softmax_exp1 on 8 lanes: the same operations
inline __m512d exp8(__m512d x) {
    const __m512d k = _mm512_roundscale_pd(_mm512_mul_pd(x, _mm512_set1_pd(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fmadd_pd(k, _mm512_set1_pd(-kLn2Hi), x);
    r = _mm512_fmadd_pd(k, _mm512_set1_pd(-kLn2Lo), r);
    __m512d p = _mm512_set1_pd(kExpPoly[0]);
    for (int i = 1; i < 14; i++) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(kExpPoly[i]));
    const __m512i ki = _mm512_cvtpd_epi64(k);  // exact: k is an integer
    const __m512d scale = _mm512_castsi512_pd(_mm512_slli_epi64(_mm512_add_epi64(ki, _mm512_set1_epi64(1023)), 52));
    __m512d e = _mm512_mul_pd(p, scale);
    // x < -708 or -inf: 0; NaN: x itself
    e = _mm512_mask_mov_pd(e, _mm512_cmp_pd_mask(x, _mm512_set1_pd(kExpMin), _CMP_NGE_UQ), _mm512_setzero_pd());
    return _mm512_mask_mov_pd(e, _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q), x);
}

double softmax_exp_avx512(double* sc, int64_t len, double mx) {
    const __m512d vm = _mm512_set1_pd(mx);
    __m512d s = _mm512_setzero_pd();
    int64_t t = 0;
    for (; t + 8 <= len; t += 8) {
        const __m512d e = exp8(_mm512_sub_pd(_mm512_loadu_pd(sc + t), vm));
        _mm512_storeu_pd(sc + t, e);
        s = _mm512_add_pd(s, e);
    }
    return softmax_exp_tail(sc, t, len, mx, reduce8(s));
}

double dot_f32_avx512(const double* a, const float* b, int64_t n) { return dot_avx512(a, b, n); }
double dot_f16_avx512(const double* a, const uint16_t* b, int64_t n) { return dot_avx512(a, b, n); }
void axpy_f32_avx512(double* y, double a, const float* x, int64_t n) { axpy_avx512(y, a, x, n); }
void axpy_f16_avx512(double* y, double a, const uint16_t* x, int64_t n) { axpy_avx512(y, a, x, n); }
}  // namespace

void fill_attention_avx512(KernelTable& t) {
    t.softmax_exp = softmax_exp_avx512;
    t.dot_f32 = dot_f32_avx512;
    t.axpy_f32 = axpy_f32_avx512;
    t.dot_f16 = dot_f16_avx512;
    t.axpy_f16 = axpy_f16_avx512;
    t.dot_rows_f32 = dot_rows_avx512<float>;
    t.dot_rows_f16 = dot_rows_avx512<uint16_t>;
    t.wsum_rows_f32 = wsum_rows_avx512<float>;
    t.wsum_rows_f16 = wsum_rows_avx512<uint16_t>;
}

}  // namespace tribit
