// The q6_k head's integer path on AVX2 (kernels.h, docs/KERNELS.md "The Q6_K head's
// integer path"): per 128-value half of a super-block the 6-bit codes are unpacked to bytes 0..63
// (32 at a time, the unpacking of matmul_q6_k_avx2 without the - 32), multiplied by
// the int8 activation codes with _mm256_maddubs_epi16 (|pair| <= 2 * 63 * 127: no
// saturation), and the 16-bit pair sums weighted by the sub-block scales with
// _mm256_madd_epi16 into int32 lanes. - 32 * sum_s scale_s * bsums_s is taken once
// per block (madd of the bsums with the scales). The lanes are summed to the exact
// S_b and the float32 step is generic's: acc = acc + (d_w * d_x) * float(S_b).
#include <immintrin.h>

#include <cstring>

#include "kernels.h"
#include "x86_shared.h"

namespace tribit {
namespace {

// NT tokens of one row: each unpacked code vector and scale vector serves all NT.
template <int NT>
void q6_k_q8_k_tile(float* y, int64_t ldy, const FloatMatrix& w, const uint8_t* q, int64_t ldq,
                    int64_t j0, int64_t r) {
    const int64_t nb = w.k / kQ6KBlock;
    const uint8_t* row = w.data + r * w.row_bytes;
    float acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = row + b * kQ6KBlockBytes;
        for (int o = 1024; o < 1024 + kQ6KBlockBytes; o += 64) _mm_prefetch((const char*)(blk + o), _MM_HINT_T0);
        const uint8_t* xb = q + j0 * ldq + b * kQ8KBlockBytes;
        const __m128i sc8 = _mm_loadu_si128((const __m128i*)(blk + 192));
        // the 16 scales as int16, even sub-blocks in the low 128 bits, odd ones in the
        // high: one in-lane byte shuffle then broadcasts scale s0 (even) to the low
        // half and s0 + 1 to the high half
        const __m256i sc_eo = _mm256_cvtepi8_epi16(
            _mm_shuffle_epi8(sc8, _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)));
        __m256i isum[NT];
        for (int t = 0; t < NT; t++) isum[t] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i v[4];  // the codes 0..63 (the float kernel's unpacking without the - 32)
            unpack_q6_k_half(blk, h, v);
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                // codes 32p + l are sub-blocks s0 = 8h + 2p (low 128 bits) and s0 + 1
                const char e = char(2 * (4 * h + p));  // bytes of int16 element s0 / 2 = 4h + p
                const __m256i scl = _mm256_shuffle_epi8(sc_eo, _mm256_setr_epi8(
                    e, char(e + 1), e, char(e + 1), e, char(e + 1), e, char(e + 1),
                    e, char(e + 1), e, char(e + 1), e, char(e + 1), e, char(e + 1),
                    e, char(e + 1), e, char(e + 1), e, char(e + 1), e, char(e + 1),
                    e, char(e + 1), e, char(e + 1), e, char(e + 1), e, char(e + 1)));
#pragma GCC unroll 4
                for (int t = 0; t < NT; t++) {
                    const __m256i a = _mm256_loadu_si256((const __m256i*)(xb + t * ldq + 4 + 128 * h + 32 * p));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(_mm256_maddubs_epi16(v[p], a), scl));
                }
            }
        }
        uint16_t dh;
        std::memcpy(&dh, blk + 208, 2);
        const float dw = _cvtsh_ss(dh);
        const __m256i s16 = _mm256_cvtepi8_epi16(sc8);
        for (int t = 0; t < NT; t++) {
            const uint8_t* xt = xb + t * ldq;
            const __m256i corr = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i*)(xt + 260)), s16);
            const int32_t s = hsum_i32(_mm256_sub_epi32(isum[t], _mm256_slli_epi32(corr, 5)));
            float dx;
            std::memcpy(&dx, xt, 4);
            acc[t] = acc[t] + (dw * dx) * float(s);
        }
    }
    for (int t = 0; t < NT; t++) y[(j0 + t) * ldy + r] = acc[t];
}

void matmul_q6_k_q8_k_avx2(float* y, int64_t ldy, const FloatMatrix& w, const uint8_t* q, int64_t ldq,
                           int64_t n, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for_token_tiles(n, [&](auto nt, int64_t j) { q6_k_q8_k_tile<decltype(nt)::value>(y, ldy, w, q, ldq, j, r); });
}

}  // namespace

void fill_q6_k_q8_k_avx2(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, matmul_q6_k_q8_k, matmul_q6_k_q8_k_avx2);
}

}  // namespace tribit
