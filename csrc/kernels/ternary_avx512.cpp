// AVX-512 VNNI ternary kernels: code * q products accumulate directly in int32
// with vpdpbusd (no int16 stage); 256-bit in the GEMV, 512-bit in the GEMM's
// register tile. Quantization, float and attention kernels come from AVX2.
// The dispatcher picks it by default where cpuid + xgetbv say it runs.
#include <immintrin.h>

#include "kernels.h"
#include "x86_shared.h"

namespace tribit {
namespace {

// sum over one 128-weight block of code * q, added to the 8 int32 lanes of acc
inline __m256i block_dot_vnni(__m256i acc, __m256i v, const int8_t* qb, __m256i m3) {
    __m256i c[4];
    unpack_planes(v, m3, c);
    for (int p = 0; p < 4; p++)
        acc = _mm256_dpbusd_epi32(acc, c[p], _mm256_loadu_si256((const __m256i*)(qb + 32 * p)));
    return acc;
}

// Decode: 4 rows at a time share each activation load. One accumulator per row
// and plane (16 chains): with one per row, its 4 dependent vpdpbusd per block
// (~16 cycles) capped the kernel at ~8 bytes of weights a cycle, about the read
// bandwidth of one core, so at 1 thread the compute leaked into decode.
void ternary_gemv_i2_avx512vnni(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                                int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                                int64_t row_begin, int64_t row_end) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    for (int64_t j = 0; j < n; j++) {
        const int8_t* qj = q + j * ldq;
        const float post = w.gamma / scale[j];
        int64_t r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            __m256i acc[4][4];
            const uint8_t* rows[4];
            for (int i = 0; i < 4; i++) {
                for (int p = 0; p < 4; p++) acc[i][p] = _mm256_setzero_si256();
                rows[i] = w.data + (r + i) * w.row_bytes;
            }
            for (int64_t b = 0; b < nblk; b++) {
                // stream the next (contiguous) group of 4 rows in, as in the AVX2 GEMV
                _mm_prefetch((const char*)(rows[0] + 4 * w.row_bytes + b * 128), _MM_HINT_T0);
                _mm_prefetch((const char*)(rows[0] + 4 * w.row_bytes + b * 128 + 64), _MM_HINT_T0);
                __m256i a[4];
                load_block(qj + b * kTernaryBlock, a);
                for (int i = 0; i < 4; i++) {
                    // unpack_planes' codes by successive shifts: the order this loop was
                    // tuned with (the compiler schedules the two forms differently)
                    __m256i v = _mm256_load_si256((const __m256i*)(rows[i] + b * 32));
                    for (int p = 0; p < 4; p++) {
                        acc[i][p] = _mm256_dpbusd_epi32(acc[i][p], _mm256_and_si256(v, m3), a[p]);
                        v = _mm256_srli_epi16(v, 2);
                    }
                }
            }
            const __m128i s = hsum4_i32(
                _mm256_add_epi32(_mm256_add_epi32(acc[0][0], acc[0][1]), _mm256_add_epi32(acc[0][2], acc[0][3])),
                _mm256_add_epi32(_mm256_add_epi32(acc[1][0], acc[1][1]), _mm256_add_epi32(acc[1][2], acc[1][3])),
                _mm256_add_epi32(_mm256_add_epi32(acc[2][0], acc[2][1]), _mm256_add_epi32(acc[2][2], acc[2][3])),
                _mm256_add_epi32(_mm256_add_epi32(acc[3][0], acc[3][1]), _mm256_add_epi32(acc[3][2], acc[3][3])));
            _mm_storeu_ps(y + j * ldy + r,
                          _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(s, _mm_set1_epi32(sum_q[j]))), _mm_set1_ps(post)));
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

// One row x T tokens in ymm registers: the odd last row of a range.
template <int T>
inline void vnni_row(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q, int64_t ldq,
                     const float* scale, const int32_t* sum_q, int64_t j0, int64_t r) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    const uint8_t* row = w.data + r * w.row_bytes;
    __m256i acc[T];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_si256();
    for (int64_t b = 0; b < nblk; b++) {
        const __m256i v = _mm256_load_si256((const __m256i*)(row + b * 32));
        for (int t = 0; t < T; t++) acc[t] = block_dot_vnni(acc[t], v, q + (j0 + t) * ldq + b * kTernaryBlock, m3);
    }
    for (int t = 0; t < T; t++) {
        const int64_t j = j0 + t;
        y[j * ldy + r] = float(hsum_i32(acc[t]) - sum_q[j]) * (w.gamma / scale[j]);
    }
}

// The GEMM's register tile: 2P rows x T tokens with 512-bit vpdpbusd. One zmm
// holds a block of two rows (row 2i in the low half, 2i + 1 in the high half) and
// each 32-byte activation plane is broadcast to both halves, so every activation
// load feeds 2P rows and every unpacked code vector T tokens. P * T independent
// accumulator chains hide vpdpbusd's latency (the former 1-row x 4-token ymm tile
// had 4 chains of 4 dependent vpdpbusd per block: ~0.45 of the multiply roof).
// Measured on Zen 4 (BENCHMARKS.md): ymm 4 rows x 4 tokens ~0.78 of the roof,
// zmm 4 x 4 ~0.79, zmm 8 x 4 (P = 4, 25 live registers) ~0.9.
// `stream`: prefetch the next 2P rows; the first token tile over a row tile
// reads its weights from DRAM in a small batch, later ones find them in L1.
template <int P, int T>
inline void vnni_tile(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q, int64_t ldq,
                      const float* scale, const int32_t* sum_q, int64_t j0, int64_t r0, bool stream) {
    const __m512i m3 = _mm512_set1_epi8(3);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    const uint8_t* rows[2 * P];
    for (int i = 0; i < 2 * P; i++) rows[i] = w.data + (r0 + i) * w.row_bytes;
    const int8_t* qt[T];
    for (int t = 0; t < T; t++) qt[t] = q + (j0 + t) * ldq;
    __m512i acc[P][T];
    for (int i = 0; i < P; i++)
        for (int t = 0; t < T; t++) acc[i][t] = _mm512_setzero_si512();
    for (int64_t b = 0; b < nblk; b++) {
        __m512i v[P];
        for (int i = 0; i < P; i++) {
            const __m256i lo = _mm256_load_si256((const __m256i*)(rows[2 * i] + b * 32));
            const __m256i hi = _mm256_load_si256((const __m256i*)(rows[2 * i + 1] + b * 32));
            v[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            if (stream && (b & 1) == 0) {
                _mm_prefetch((const char*)(rows[2 * i] + 2 * P * w.row_bytes + b * 32), _MM_HINT_T0);
                _mm_prefetch((const char*)(rows[2 * i + 1] + 2 * P * w.row_bytes + b * 32), _MM_HINT_T0);
            }
        }
        for (int p = 0; p < 4; p++) {  // plane p: weights p*32 .. p*32+31 of the block
            __m512i c[P];
            for (int i = 0; i < P; i++) {
                c[i] = _mm512_and_si512(v[i], m3);
                v[i] = _mm512_srli_epi16(v[i], 2);
            }
            for (int t = 0; t < T; t++) {
                const __m512i a = _mm512_broadcast_i64x4(
                    _mm256_loadu_si256((const __m256i*)(qt[t] + b * kTernaryBlock + p * 32)));
                for (int i = 0; i < P; i++) acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], c[i], a);
            }
        }
    }
    // y = float(S - sum_q) * (gamma / scale): the scalar formula, 4 rows per store
    static_assert(P % 2 == 0, "rows are reduced 4 at a time");
    for (int t = 0; t < T; t++) {
        const int64_t j = j0 + t;
        const __m128 post = _mm_set1_ps(w.gamma / scale[j]);
        const __m128i sq = _mm_set1_epi32(sum_q[j]);
        for (int i = 0; i < P; i += 2) {
            const __m128i s = hsum4_i32(_mm512_castsi512_si256(acc[i][t]), _mm512_extracti64x4_epi64(acc[i][t], 1),
                                        _mm512_castsi512_si256(acc[i + 1][t]), _mm512_extracti64x4_epi64(acc[i + 1][t], 1));
            _mm_storeu_ps(y + j * ldy + r0 + 2 * i, _mm_mul_ps(_mm_cvtepi32_ps(_mm_sub_epi32(s, sq)), post));
        }
    }
}

constexpr int kTilePairs = 4;  // 8 rows
constexpr int kTileTokens = 4;

// Rows [r0, r1) for the T tokens from j0: full tiles, then row by row.
template <int T>
inline void vnni_rows(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q, int64_t ldq,
                      const float* scale, const int32_t* sum_q, int64_t j0, int64_t r0, int64_t r1) {
    int64_t r = r0;
    for (; r + 2 * kTilePairs <= r1; r += 2 * kTilePairs)
        vnni_tile<kTilePairs, T>(y, ldy, w, q, ldq, scale, sum_q, j0, r, j0 == 0);
    for (; r < r1; r++) vnni_row<T>(y, ldy, w, q, ldq, scale, sum_q, j0, r);
}

// Prefill and small batches: a tile of kRowTile rows stays in L1 while every
// token tile passes over it.
void ternary_gemm_i2_avx512vnni(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                                int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                                int64_t row_begin, int64_t row_end) {
    constexpr int64_t kRowTile = 16;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowTile) {
        const int64_t r1 = r0 + kRowTile < row_end ? r0 + kRowTile : row_end;
        for (int64_t j0 = 0; j0 < n; j0 += kTileTokens) {
            switch (n - j0 < kTileTokens ? n - j0 : kTileTokens) {
                case 1: vnni_rows<1>(y, ldy, w, q, ldq, scale, sum_q, j0, r0, r1); break;
                case 2: vnni_rows<2>(y, ldy, w, q, ldq, scale, sum_q, j0, r0, r1); break;
                case 3: vnni_rows<3>(y, ldy, w, q, ldq, scale, sum_q, j0, r0, r1); break;
                default: vnni_rows<4>(y, ldy, w, q, ldq, scale, sum_q, j0, r0, r1); break;
            }
        }
    }
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

void fill_ternary_avx512(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, ternary_gemv, ternary_gemv_i2_avx512vnni);
    TRIBIT_SET_KERNEL(t, ternary_gemm, ternary_gemm_i2_avx512vnni);
    t.mac_probe = mac_probe_avx512;
}

}  // namespace tribit
