// AVX-512 VNNI ternary kernels (with AVX512VL: 256-bit vpdpbusd). Same loop
// structure as the AVX2 kernels, but code * q products accumulate directly in
// int32 (no int16 stage). Quantization and float kernels come from AVX2.
//
// This machine class could not be tested where tribit was written (AMD Zen,
// AVX2 only), so the dispatcher only picks it by default after the tests have
// run on such a CPU (see dispatch.cpp); TRIBIT_ISA=avx512 forces it.
#include <immintrin.h>

#include "kernels.h"

namespace tribit {
namespace {

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

inline __m256i block_dot_vnni(__m256i acc, __m256i v, const int8_t* qb, __m256i m3) {
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(v, m3), _mm256_loadu_si256((const __m256i*)(qb)));
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(_mm256_srli_epi16(v, 2), m3), _mm256_loadu_si256((const __m256i*)(qb + 32)));
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(_mm256_srli_epi16(v, 4), m3), _mm256_loadu_si256((const __m256i*)(qb + 64)));
    acc = _mm256_dpbusd_epi32(acc, _mm256_and_si256(_mm256_srli_epi16(v, 6), m3), _mm256_loadu_si256((const __m256i*)(qb + 96)));
    return acc;
}

void ternary_gemv_avx512(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                         int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                         int64_t row_begin, int64_t row_end) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    for (int64_t j = 0; j < n; j++) {
        const int8_t* qj = q + j * ldq;
        const float post = w.gamma / scale[j];
        int64_t r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            __m256i acc[4];
            const uint8_t* rows[4];
            for (int i = 0; i < 4; i++) {
                acc[i] = _mm256_setzero_si256();
                rows[i] = w.data + (r + i) * w.row_bytes;
            }
            for (int64_t b = 0; b < nblk; b++) {
                // stream the next (contiguous) group of 4 rows in, as in the AVX2 GEMV
                _mm_prefetch((const char*)(rows[0] + 4 * w.row_bytes + b * 128), _MM_HINT_T0);
                _mm_prefetch((const char*)(rows[0] + 4 * w.row_bytes + b * 128 + 64), _MM_HINT_T0);
                for (int i = 0; i < 4; i++)
                    acc[i] = block_dot_vnni(acc[i], _mm256_load_si256((const __m256i*)(rows[i] + b * 32)), qj + b * kTernaryBlock, m3);
            }
            for (int i = 0; i < 4; i++) y[j * ldy + r + i] = float(hsum_i32(acc[i]) - sum_q[j]) * post;
        }
        for (; r < row_end; r++) {
            const uint8_t* row = w.data + r * w.row_bytes;
            __m256i acc = _mm256_setzero_si256();
            for (int64_t b = 0; b < nblk; b++)
                acc = block_dot_vnni(acc, _mm256_load_si256((const __m256i*)(row + b * 32)), qj + b * kTernaryBlock, m3);
            y[j * ldy + r] = float(hsum_i32(acc) - sum_q[j]) * post;
        }
    }
}

void ternary_gemm_avx512(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                         int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                         int64_t row_begin, int64_t row_end) {
    constexpr int kTok = 4;
    constexpr int64_t kRowTile = 16;
    const __m256i m3 = _mm256_set1_epi8(3);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    const int64_t n_full = n / kTok * kTok;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowTile) {
        const int64_t r1 = r0 + kRowTile < row_end ? r0 + kRowTile : row_end;
        for (int64_t j0 = 0; j0 < n_full; j0 += kTok) {
            for (int64_t r = r0; r < r1; r++) {
                const uint8_t* row = w.data + r * w.row_bytes;
                __m256i acc[kTok];
                for (int t = 0; t < kTok; t++) acc[t] = _mm256_setzero_si256();
                for (int64_t b = 0; b < nblk; b++) {
                    __m256i v = _mm256_load_si256((const __m256i*)(row + b * 32));
                    __m256i c0 = _mm256_and_si256(v, m3);
                    __m256i c1 = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
                    __m256i c2 = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
                    __m256i c3 = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
                    for (int t = 0; t < kTok; t++) {
                        const int8_t* qb = q + (j0 + t) * ldq + b * kTernaryBlock;
                        acc[t] = _mm256_dpbusd_epi32(acc[t], c0, _mm256_loadu_si256((const __m256i*)(qb)));
                        acc[t] = _mm256_dpbusd_epi32(acc[t], c1, _mm256_loadu_si256((const __m256i*)(qb + 32)));
                        acc[t] = _mm256_dpbusd_epi32(acc[t], c2, _mm256_loadu_si256((const __m256i*)(qb + 64)));
                        acc[t] = _mm256_dpbusd_epi32(acc[t], c3, _mm256_loadu_si256((const __m256i*)(qb + 96)));
                    }
                }
                for (int t = 0; t < kTok; t++) {
                    const int64_t j = j0 + t;
                    y[j * ldy + r] = float(hsum_i32(acc[t]) - sum_q[j]) * (w.gamma / scale[j]);
                }
            }
        }
    }
    if (n_full < n)
        ternary_gemv_avx512(y + n_full * ldy, ldy, w, q + n_full * ldq, ldq, scale + n_full,
                            sum_q + n_full, n - n_full, row_begin, row_end);
}

// With VNNI the GEMM needs one vpdpbusd per 32 weights and token (it adds into
// int32 itself): 8 independent chains of it, in asm as the AVX2 probe.
int64_t mac_probe_avx512(int64_t iters) {
    for (int64_t it = 0; it < iters; it++)
        __asm__ volatile(
            "vpdpbusd %%ymm12, %%ymm8, %%ymm0\n\t"
            "vpdpbusd %%ymm12, %%ymm9, %%ymm1\n\t"
            "vpdpbusd %%ymm12, %%ymm10, %%ymm2\n\t"
            "vpdpbusd %%ymm12, %%ymm11, %%ymm3\n\t"
            "vpdpbusd %%ymm13, %%ymm8, %%ymm4\n\t"
            "vpdpbusd %%ymm13, %%ymm9, %%ymm5\n\t"
            "vpdpbusd %%ymm13, %%ymm10, %%ymm6\n\t"
            "vpdpbusd %%ymm13, %%ymm11, %%ymm7\n\t"
            ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7");
    _mm256_zeroupper();
    return iters * 8 * 32;
}

}  // namespace

void fill_table_avx512(KernelTable& t) {
    t.mac_probe = mac_probe_avx512;
    t.ternary_gemv = ternary_gemv_avx512;
    t.ternary_gemv_name = "ternary_gemv_i2_avx512vnni";
    t.ternary_gemm = ternary_gemm_avx512;
    t.ternary_gemm_name = "ternary_gemm_i2_avx512vnni";
}

}  // namespace tribit
