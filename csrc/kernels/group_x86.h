// The x86 group matmul (Q2_0 / Q1_0 weights x Q8_0 activations, mode a of kernels.h),
// written once over an integer-dot trait: AVX2 (vpmaddubsw into int16, widened once per
// 32-weight block) and AVX-512 VNNI (vpdpbusd into int32, 256-bit). Included by
// group_avx2.cpp and group_avx512.cpp, each compiled with its own flags; internal linkage.
//
// Lanes are rows: one ymm holds the 8 rows of a row group (the layout of kernels.h), so each
// int32 lane sums one row's 32-weight activation block by itself, and the float epilogue
// is lane-wise in exactly the generic kernel's order: Q2_0, S = sum - bsum,
// t = t + da * float(S) per activation block, acc = acc + dw * t per weight block; Q1_0
// (group_tile_q1), ggml's 8-accumulator AVX2 order.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace tribit {
namespace {

inline __m256i load_i32_bcast(const int8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

// The 32 codes (8 rows x 4 weights) of one Q2_0 step: bytes 4g..4g+3 are row g's.
inline __m256i unpack_q2_step(const uint8_t* p) {
    int64_t v;
    std::memcpy(&v, p, 8);
    const __m256i shifts = _mm256_setr_epi64x(0, 2, 4, 6);
    return _mm256_and_si256(_mm256_srlv_epi64(_mm256_set1_epi64x(v), shifts), _mm256_set1_epi8(3));
}

// Rows [r0, r1) of row group g for the T tokens from j0 (Q2_0).
template <class Dot, GroupType Type, int T>
inline void group_tile(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                       const int32_t* bsum, int64_t j0, int64_t g, int64_t r0, int64_t r1) {
    static_assert(Type == GroupType::q2_0, "Q1_0 has group_tile_q1");
    constexpr int per = 2;  // activation blocks per weight block
    constexpr int step_bytes = 8;
    const int64_t block = per * 32, nb = w.k / block, na = w.k / 32;
    const uint8_t* base = w.data + g * w.group_bytes;
    __m256 acc[T];
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = base + b * kGroupBlockBytes;
        const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)blk));
        __m256 tb[T];
        for (int t = 0; t < T; t++) tb[t] = _mm256_setzero_ps();
        for (int h = 0; h < per; h++) {
            typename Dot::Acc s0[T], s1[T];  // even and odd steps: two independent chains
            for (int t = 0; t < T; t++) s0[t] = s1[t] = Dot::zero();
            const uint8_t* st = blk + 16 + h * 8 * step_bytes;
            const int64_t qoff = b * block + h * 32;
            for (int s = 0; s < 8; s += 2) {
                const __m256i c0 = Dot::template unpack<Type>(st + s * step_bytes);
                const __m256i c1 = Dot::template unpack<Type>(st + (s + 1) * step_bytes);
                for (int t = 0; t < T; t++) {
                    const int8_t* qt = q + (j0 + t) * w.k + qoff + 4 * s;
                    s0[t] = Dot::step(s0[t], c0, load_i32_bcast(qt));
                    s1[t] = Dot::step(s1[t], c1, load_i32_bcast(qt + 4));
                }
            }
            for (int t = 0; t < T; t++) {
                const int64_t a = (j0 + t) * na + b * per + h;
                __m256i sum = Dot::finish(s0[t], s1[t]);
                sum = _mm256_sub_epi32(sum, _mm256_set1_epi32(bsum[a]));
                tb[t] = _mm256_add_ps(tb[t], _mm256_mul_ps(_mm256_set1_ps(d[a]), _mm256_cvtepi32_ps(sum)));
            }
        }
        for (int t = 0; t < T; t++) acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(dw, tb[t]));
    }
    const int64_t g0 = g * kGroupRows;
    for (int t = 0; t < T; t++) {
        float* yt = y + (j0 + t) * ldy;
        if (r0 == g0 && r1 == g0 + kGroupRows) {
            _mm256_storeu_ps(yt + g0, acc[t]);
        } else {
            alignas(32) float tmp[kGroupRows];
            _mm256_store_ps(tmp, acc[t]);
            for (int64_t r = r0; r < r1; r++) yt[r] = tmp[r - g0];
        }
    }
}

// ggml's hsum_float_8: lanes l + 4, then 0 + 2 and 1 + 3, then the two
inline float hsum8(__m256 x) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// Q1_0 in ggml's AVX2 order (kernels.h): lanes are ggml's 8 steps (weights 4s..4s+3 of an
// activation block), a row at a time: S = 2 sum(bit * q) - sum(q) per step (exact for
// every int8 code; the step sums of q are shared by the 8 rows), t = t + da * float(S) per
// activation block (da * S is exact, so the FMA is that sum), acc = fma(dw, t, acc) per
// weight block, then hsum8.
template <class Dot, int T>
inline void group_tile_q1(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                          int64_t j0, int64_t g, int64_t r0, int64_t r1) {
    const int64_t nb = w.k / 128, na = w.k / 32, g0 = g * kGroupRows;
    const uint8_t* base = w.data + g * w.group_bytes;
    const __m256i ones8 = _mm256_set1_epi8(1), ones16 = _mm256_set1_epi16(1);
    __m256 acc[kGroupRows][T];
    for (int64_t r = r0; r < r1; r++)
        for (int t = 0; t < T; t++) acc[r - g0][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = base + b * kGroupBlockBytes;
        __m256i qv[4][T], nq[4][T];
        __m256 da[4][T];
        for (int h = 0; h < 4; h++)
            for (int t = 0; t < T; t++) {
                qv[h][t] = _mm256_loadu_si256((const __m256i*)(q + (j0 + t) * w.k + b * 128 + h * 32));
                nq[h][t] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                            _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, qv[h][t]), ones16));
                da[h][t] = _mm256_set1_ps(d[(j0 + t) * na + b * 4 + h]);
            }
        for (int64_t r = r0; r < r1; r++) {
            const int64_t rr = r - g0;
            uint16_t dh;
            std::memcpy(&dh, blk + 2 * rr, 2);
            const __m256 dw = _mm256_set1_ps(_cvtsh_ss(dh));
            const uint8_t* qs = blk + 16 + rr * 16;
            __m256 tb[T];
            for (int h = 0; h < 4; h++) {
                uint32_t bits;
                std::memcpy(&bits, qs + 4 * h, 4);
                const __m256i c2 = Dot::unpack_bits2(bits);  // byte i: 2 * bit i
                for (int t = 0; t < T; t++) {
                    const __m256 sv = _mm256_cvtepi32_ps(Dot::dot4(nq[h][t], c2, qv[h][t]));
                    tb[t] = h == 0 ? _mm256_mul_ps(da[h][t], sv) : _mm256_fmadd_ps(da[h][t], sv, tb[t]);
                }
            }
            for (int t = 0; t < T; t++) acc[rr][t] = _mm256_fmadd_ps(dw, tb[t], acc[rr][t]);
        }
    }
    for (int64_t r = r0; r < r1; r++)
        for (int t = 0; t < T; t++) y[(j0 + t) * ldy + r] = hsum8(acc[r - g0][t]);
}

template <class Dot, GroupType Type>
void group_matmul_x86(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                      const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    if (row_begin >= row_end) return;
    for (int64_t g = row_begin / kGroupRows; g * kGroupRows < row_end; g++) {
        const int64_t r0 = g * kGroupRows > row_begin ? g * kGroupRows : row_begin;
        const int64_t r1 = (g + 1) * kGroupRows < row_end ? (g + 1) * kGroupRows : row_end;
        int64_t j = 0;
        if constexpr (Type == GroupType::q1_0) {  // ggml's order, up to 4 tokens a tile
            for (; j + 4 <= n; j += 4) group_tile_q1<Dot, 4>(y, ldy, w, q, d, j, g, r0, r1);
            for (; j + 2 <= n; j += 2) group_tile_q1<Dot, 2>(y, ldy, w, q, d, j, g, r0, r1);
            if (j < n) group_tile_q1<Dot, 1>(y, ldy, w, q, d, j, g, r0, r1);
        } else {
            for (; j + 4 <= n; j += 4) group_tile<Dot, Type, 4>(y, ldy, w, q, d, bsum, j, g, r0, r1);
            switch (n - j) {
                case 3: group_tile<Dot, Type, 3>(y, ldy, w, q, d, bsum, j, g, r0, r1); break;
                case 2: group_tile<Dot, Type, 2>(y, ldy, w, q, d, bsum, j, g, r0, r1); break;
                case 1: group_tile<Dot, Type, 1>(y, ldy, w, q, d, bsum, j, g, r0, r1); break;
                default: break;
            }
        }
    }
}

// Q8_0 activations with llama.cpp's x86 arithmetic (kernels.h), 8 values a vector.
inline void quantize_q8_0_x86(int8_t* q, float* d, int32_t* bsum, const float* x, int64_t ldx,
                              int64_t n, int64_t k) {
    const int64_t nb = k / 32;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t j = 0; j < n; j++) {
        for (int64_t b = 0; b < nb; b++) {
            const float* xb = x + j * ldx + b * 32;
            __m256 v[4];
            for (int i = 0; i < 4; i++) v[i] = _mm256_loadu_ps(xb + 8 * i);
            __m256 mx = _mm256_andnot_ps(sign, v[0]);
            for (int i = 1; i < 4; i++) mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
            __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(mx, 1), _mm256_castps256_ps128(mx));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            const float amax = _mm_cvtss_f32(m4);
            const float dd = amax / 127.0f;
            d[j * nb + b] = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtps_ph(_mm_set_ss(dd), _MM_FROUND_TO_NEAREST_INT)));
            const __m256 id = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
            __m256i iv[4];
            for (int i = 0; i < 4; i++)
                iv[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
            p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i*)(q + j * k + b * 32), p);
            // the sum of the stored (saturated) codes
            const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p), _mm256_set1_epi16(1));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            bsum[j * nb + b] = _mm_cvtsi128_si32(s4);
        }
    }
}

}  // namespace
}  // namespace tribit
