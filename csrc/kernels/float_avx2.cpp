// AVX2 float kernels of the head (x86-64 with AVX2 + FMA + F16C): f32, f16, bf16,
// Q8_0 and Q6_K rows times float32 activations.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels.h"
#include "x86_shared.h"

namespace tribit {
namespace {

inline __m256 load8_f32(const uint8_t* p) { return _mm256_loadu_ps((const float*)p); }
inline __m256 load8_f16(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
inline __m256 load8_bf16(const uint8_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}

// dot(W_row, x_t) for T = 1 or 2 tokens, each in one order whatever T: four
// 8-lane chains over 32-weight steps, then 8-weight steps into the first,
// ((a0 + a1) + (a2 + a3)) summed across lanes, then the scalar tail. So a token's
// logits are the same bits alone or in a batch (the former 4-token tile summed in
// another order), and the 4 (or 8) independent chains hide the FMA latency: the
// 4-token tile's single chain per token ran the 8-stream head at ~0.3 of the FMA
// roof. The row is prefetched 1 KiB ahead (decode is memory-bound: 0.66 -> 0.86
// of the read bandwidth).
template <int T, int ElemBytes, __m256 (*Load)(const uint8_t*)>
inline void float_row_dot(float* const* out, const uint8_t* row, const float* const* xs, int64_t k,
                          float (*scalar)(const uint8_t*, int64_t)) {
    const int64_t k8 = k / 8 * 8;
    __m256 acc[T][4];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 4; q++) acc[t][q] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k8; i += 32) {
        _mm_prefetch((const char*)(row + i * ElemBytes + 1024), _MM_HINT_T0);
        if (ElemBytes == 4) _mm_prefetch((const char*)(row + i * ElemBytes + 1088), _MM_HINT_T0);
        for (int q = 0; q < 4; q++) {
            const __m256 wv = Load(row + (i + 8 * q) * ElemBytes);
            for (int t = 0; t < T; t++) acc[t][q] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[t] + i + 8 * q), acc[t][q]);
        }
    }
    for (; i < k8; i += 8) {
        const __m256 wv = Load(row + i * ElemBytes);
        for (int t = 0; t < T; t++) acc[t][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xs[t] + i), acc[t][0]);
    }
    for (int t = 0; t < T; t++) {
        float s = hsum_f32(_mm256_add_ps(_mm256_add_ps(acc[t][0], acc[t][1]), _mm256_add_ps(acc[t][2], acc[t][3])));
        for (int64_t m = k8; m < k; m++) s += scalar(row, m) * xs[t][m];
        *out[t] = s;
    }
}

// Two tokens at a time per row (each weight vector widened once for both), then
// the odd one; elem_bytes = bytes per weight for the pointer math.
template <int ElemBytes, __m256 (*Load)(const uint8_t*)>
void float_matmul_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx,
                       int64_t n, int64_t r0, int64_t r1, float (*scalar)(const uint8_t*, int64_t)) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + r * w.row_bytes;
        int64_t j = 0;
        for (; j + 2 <= n; j += 2) {
            float* out[2] = {y + j * ldy + r, y + (j + 1) * ldy + r};
            const float* xs[2] = {x + j * ldx, x + (j + 1) * ldx};
            float_row_dot<2, ElemBytes, Load>(out, row, xs, w.k, scalar);
        }
        if (j < n) {
            float* out[1] = {y + j * ldy + r};
            const float* xs[1] = {x + j * ldx};
            float_row_dot<1, ElemBytes, Load>(out, row, xs, w.k, scalar);
        }
    }
}

float scalar_f32(const uint8_t* row, int64_t i) { float v; std::memcpy(&v, row + 4 * i, 4); return v; }
float scalar_f16(const uint8_t* row, int64_t i) { uint16_t h; std::memcpy(&h, row + 2 * i, 2); return fp16_to_fp32(h); }
float scalar_bf16(const uint8_t* row, int64_t i) { uint16_t h; std::memcpy(&h, row + 2 * i, 2); return bf16_to_fp32(h); }

void matmul_f32_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_avx2<4, load8_f32>(y, ldy, w, x, ldx, n, r0, r1, scalar_f32);
}
void matmul_f16_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_avx2<2, load8_f16>(y, ldy, w, x, ldx, n, r0, r1, scalar_f16);
}
void matmul_bf16_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_avx2<2, load8_bf16>(y, ldy, w, x, ldx, n, r0, r1, scalar_bf16);
}

// Q8_0: per 32-value block, d * dot(int8, x) with the int8s widened to float.
void matmul_q8_0_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    const int64_t nb = w.k / 32;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + r * w.row_bytes;
        for (int64_t j = 0; j < n; j++) {
            const float* xj = x + j * ldx;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t* blk = row + b * 34;
                uint16_t dh;
                std::memcpy(&dh, blk, 2);
                __m256 s = _mm256_setzero_ps();
                for (int u = 0; u < 4; u++) {
                    __m256 qv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(blk + 2 + 8 * u))));
                    s = _mm256_fmadd_ps(qv, _mm256_loadu_ps(xj + b * 32 + 8 * u), s);
                }
                acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(dh)), s, acc);  // F16C: exact, no branches
            }
            y[j * ldy + r] = hsum_f32(acc);
        }
    }
}

// Q6_K head (kernels.h). Per 128-value half of a super-block the codes are
// unpacked in registers to int8 (q - 32), 32 at a time, and widened to float
// 8 at a time; a tile of NT tokens reuses them: each 16-value sub-block's
// dot(q, x) in float32, times d * scale[s], is added to one of C chains.
// Another summation order than matmul_q6_k_generic: equal to float32 rounding.
// Decode (NT = 1) streams the rows: prefetch 1 KiB ahead, as the f16 kernel.
// (Unpacking through a stack buffer instead ran at half the speed: its 8-byte
// reloads of 32-byte stores are not forwarded.)
template <int NT, int C>
inline void q6_k_sub(__m256 (&acc)[NT][C], int s, __m128i q16, const float* ds, const float* x,
                     int64_t ldx) {
    const __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q16));
    const __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(q16, q16)));
    const __m256 vds = _mm256_broadcast_ss(ds + s);
#pragma GCC unroll 4
    for (int t = 0; t < NT; t++) {
        const float* xt = x + t * ldx + 16 * s;
        __m256 p = _mm256_mul_ps(w0, _mm256_loadu_ps(xt));
        p = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xt + 8), p);
        acc[t][s % C] = _mm256_fmadd_ps(vds, p, acc[t][s % C]);
    }
}

template <int NT>
void q6_k_tile(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx,
               int64_t j0, int64_t r) {
    constexpr int C = NT == 1 ? 4 : 2;
    const int64_t nb = w.k / kQ6KBlock;
    const uint8_t* row = w.data + r * w.row_bytes;
    const __m256i off = _mm256_set1_epi8(32);
    __m256 acc[NT][C];
    for (int t = 0; t < NT; t++)
        for (int c = 0; c < C; c++) acc[t][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = row + b * kQ6KBlockBytes;
        for (int o = 1024; o < 1024 + 256; o += 64) _mm_prefetch((const char*)(blk + o), _MM_HINT_T0);
        uint16_t dh;
        std::memcpy(&dh, blk + 208, 2);
        // the 16 sub-block factors d * scale[s], each the float32 product generic computes
        alignas(32) float ds[16];
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(dh));
        const __m128i sc = _mm_loadu_si128((const __m128i*)(blk + 192));
        _mm256_store_ps(ds, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(sc))));
        _mm256_store_ps(ds + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(sc, sc)))));
        const float* xb = x + j0 * ldx + b * kQ6KBlock;
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m256i v[4];  // values 32p + l of the half, as codes 0..63
            unpack_q6_k_half(blk, h, v);
#pragma GCC unroll 4
            for (int p = 0; p < 4; p++) {
                const __m256i q = _mm256_sub_epi8(v[p], off);  // values 32p + l: sub-blocks 2p, 2p+1
                const int s0 = 8 * h + 2 * p;
                q6_k_sub<NT, C>(acc, s0, _mm256_castsi256_si128(q), ds, xb, ldx);
                q6_k_sub<NT, C>(acc, s0 + 1, _mm256_extracti128_si256(q, 1), ds, xb, ldx);
            }
        }
    }
    for (int t = 0; t < NT; t++) {
        __m256 a = acc[t][0];
        for (int c = 1; c < C; c++) a = _mm256_add_ps(a, acc[t][c]);
        y[(j0 + t) * ldy + r] = hsum_f32(a);
    }
}

void matmul_q6_k_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++)
        for_token_tiles(n, [&](auto nt, int64_t j) { q6_k_tile<decltype(nt)::value>(y, ldy, w, x, ldx, j, r); });
}
}  // namespace

void fill_float_avx2(KernelTable& t) {
    TRIBIT_SET_FLOAT_KERNEL(t, f32, matmul_f32_avx2);
    TRIBIT_SET_FLOAT_KERNEL(t, f16, matmul_f16_avx2);
    TRIBIT_SET_FLOAT_KERNEL(t, bf16, matmul_bf16_avx2);
    TRIBIT_SET_FLOAT_KERNEL(t, q8_0, matmul_q8_0_avx2);
    TRIBIT_SET_FLOAT_KERNEL(t, q6_k, matmul_q6_k_avx2);
}

}  // namespace tribit
