// AVX-512 float kernels of the head (f32, f16, bf16 rows times float32
// activations): register tiles of 4 rows x 2 tokens for batches, so each
// activation load feeds 4 rows. The AVX2 kernel (1 row x 2 tokens) re-read all
// the batch's activations from L2 for every row and ran the 8-token head at
// ~0.35 of the FMA roof. Each (row, token) sum keeps the AVX2 kernel's order
// exactly (float_avx2.cpp): four 8-lane chains over 32-weight steps, held here as
// two 16-lane registers (chains 0-1 and 2-3: the same lanes, the same FMAs), then
// 8-weight steps into chain 0, ((c0 + c1) + (c2 + c3)) across lanes, the scalar
// tail. So logits are the same bits as with avx2, alone or in any batch.
#include <immintrin.h>

#include <cstring>

#include "kernels.h"
#include "x86_shared.h"

namespace tribit {
namespace {

inline __m512 load16_f32(const uint8_t* p) { return _mm512_loadu_ps((const float*)p); }
inline __m512 load16_f16(const uint8_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
inline __m512 load16_bf16(const uint8_t* p) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p)), 16));
}

struct F32 {
    static constexpr int bytes = 4;
    static __m512 load16(const uint8_t* p) { return load16_f32(p); }
    static __m256 load8(const uint8_t* p) { return load8_f32(p); }
    static float scalar(const uint8_t* r, int64_t i) { return scalar_f32(r, i); }
};
struct F16 {
    static constexpr int bytes = 2;
    static __m512 load16(const uint8_t* p) { return load16_f16(p); }
    static __m256 load8(const uint8_t* p) { return load8_f16(p); }
    static float scalar(const uint8_t* r, int64_t i) { return scalar_f16(r, i); }
};
struct BF16 {
    static constexpr int bytes = 2;
    static __m512 load16(const uint8_t* p) { return load16_bf16(p); }
    static __m256 load8(const uint8_t* p) { return load8_bf16(p); }
    static float scalar(const uint8_t* r, int64_t i) { return scalar_bf16(r, i); }
};

// The end of one (row, token) sum from its two 16-lane registers: the 8-weight
// steps into chain 0, the sum across chains and lanes, the scalar tail.
template <class E>
inline float finish(__m512 lo, __m512 hi, const uint8_t* row, const float* x, int64_t i, int64_t k) {
    const int64_t k8 = k / 8 * 8;
    __m256 c0 = _mm512_castps512_ps256(lo);
    const __m256 c1 = _mm512_extractf32x8_ps(lo, 1);
    const __m256 c2 = _mm512_castps512_ps256(hi);
    const __m256 c3 = _mm512_extractf32x8_ps(hi, 1);
    for (; i < k8; i += 8) c0 = _mm256_fmadd_ps(E::load8(row + i * E::bytes), _mm256_loadu_ps(x + i), c0);
    float s = hsum_f32(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)));
    for (int64_t m = k8; m < k; m++) s += E::scalar(row, m) * x[m];
    return s;
}

// One row against T = 1 or 2 tokens in 8-lane registers, the AVX2 kernel's loop
// itself (zmm streams measured a little slower): decode, and batches too small
// for the blocks below. The row is prefetched 1 KiB ahead.
template <class E, int T>
inline void row_dot(float* y, int64_t ldy, const uint8_t* row, const float* x, int64_t ldx, int64_t k) {
    const int64_t k8 = k / 8 * 8;
    __m256 acc[T][4];
    for (int t = 0; t < T; t++)
        for (int q = 0; q < 4; q++) acc[t][q] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= k8; i += 32) {
        _mm_prefetch((const char*)(row + i * E::bytes + 1024), _MM_HINT_T0);
        if (E::bytes == 4) _mm_prefetch((const char*)(row + i * E::bytes + 1088), _MM_HINT_T0);
        for (int q = 0; q < 4; q++) {
            const __m256 wv = E::load8(row + (i + 8 * q) * E::bytes);
            for (int t = 0; t < T; t++)
                acc[t][q] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * ldx + i + 8 * q), acc[t][q]);
        }
    }
    for (int t = 0; t < T; t++) {
        const __m512 lo = _mm512_insertf32x8(_mm512_castps256_ps512(acc[t][0]), acc[t][1], 1);
        const __m512 hi = _mm512_insertf32x8(_mm512_castps256_ps512(acc[t][2]), acc[t][3], 1);
        y[t * ldy] = finish<E>(lo, hi, row, x + t * ldx, i, k);
    }
}

// Batches: blocks of R rows x up to kGroup tokens. The block's weights are
// widened to f32 once per chunk of kChunk values (an L1 buffer) and then used by
// every token pair; each pair's R x 2 sums (two registers each) live in
// registers over the chunk and in `state` between chunks, so the order of every
// chain is unchanged. Activation loads feed R rows, weight loads 2 tokens.
constexpr int kGroup = 8;
constexpr int64_t kChunk = 256;

template <int R, int T>
inline void pair_chunk(__m512 (*state)[kGroup][2], const float* wbuf, const float* const* xs, int64_t i0,
                       int64_t len, int t0) {
    __m512 lo[R][T], hi[R][T];
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) lo[r][t] = state[r][t0 + t][0], hi[r][t] = state[r][t0 + t][1];
    for (int64_t i = 0; i < len; i += 32) {
        __m512 xl[T], xh[T];
        for (int t = 0; t < T; t++) {
            xl[t] = _mm512_loadu_ps(xs[t] + i0 + i);
            xh[t] = _mm512_loadu_ps(xs[t] + i0 + i + 16);
        }
        for (int r = 0; r < R; r++) {
            __m512 wl = _mm512_load_ps(wbuf + r * kChunk + i);
            __m512 wh = _mm512_load_ps(wbuf + r * kChunk + i + 16);
            // one load per weight vector, not one per token: the compiler would fold
            // the load into each FMA, and loads, not FMAs, would bound the loop
            __asm__("" : "+v"(wl), "+v"(wh));
            for (int t = 0; t < T; t++) {
                lo[r][t] = _mm512_fmadd_ps(wl, xl[t], lo[r][t]);
                hi[r][t] = _mm512_fmadd_ps(wh, xh[t], hi[r][t]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int t = 0; t < T; t++) state[r][t0 + t][0] = lo[r][t], state[r][t0 + t][1] = hi[r][t];
}

template <class E, int R>
void row_block(float* y, int64_t ldy, const FloatMatrix& w, int64_t r0, const float* x, int64_t ldx, int64_t n) {
    const int64_t k = w.k, k32 = k / 8 * 8 / 32 * 32;  // the 32-weight steps of every chain
    const uint8_t* rows[R];
    for (int r = 0; r < R; r++) rows[r] = w.data + (r0 + r) * w.row_bytes;
    alignas(64) float wbuf[R * kChunk];
    alignas(64) __m512 state[R][kGroup][2];
    for (int64_t j0 = 0; j0 < n; j0 += kGroup) {
        const int g = int(n - j0 < kGroup ? n - j0 : kGroup);
        const float* xs[kGroup];
        for (int t = 0; t < g; t++) xs[t] = x + (j0 + t) * ldx;
        for (int r = 0; r < R; r++)
            for (int t = 0; t < g; t++) state[r][t][0] = state[r][t][1] = _mm512_setzero_ps();
        for (int64_t c = 0; c < k32; c += kChunk) {
            const int64_t len = k32 - c < kChunk ? k32 - c : kChunk;
            for (int r = 0; r < R; r++)
                for (int64_t i = 0; i < len; i += 16) {
                    const uint8_t* at = rows[r] + (c + i) * E::bytes;
                    // the same bytes of the next block: streamed from memory while this
                    // block computes (prefetches never fault past the end)
                    if (j0 == 0 && (i * E::bytes) % 64 == 0) _mm_prefetch((const char*)(at + R * w.row_bytes), _MM_HINT_T0);
                    _mm512_store_ps(wbuf + r * kChunk + i, E::load16(at));
                }
            int t = 0;
            for (; t + 2 <= g; t += 2) pair_chunk<R, 2>(state, wbuf, xs + t, c, len, t);
            if (t < g) pair_chunk<R, 1>(state, wbuf, xs + t, c, len, t);
        }
        for (int r = 0; r < R; r++)
            for (int t = 0; t < g; t++)
                y[(j0 + t) * ldy + r0 + r] = finish<E>(state[r][t][0], state[r][t][1], rows[r], xs[t], k32, k);
    }
}

template <class E>
void float_matmul_avx512(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n,
                         int64_t r0, int64_t r1) {
    if (n < 4) {  // memory-bound: stream each row once
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t* row = w.data + r * w.row_bytes;
            if (n >= 2) row_dot<E, 2>(y + r, ldy, row, x, ldx, w.k);
            if (n != 2) row_dot<E, 1>(y + (n - 1) * ldy + r, ldy, row, x + (n - 1) * ldx, ldx, w.k);
        }
        return;
    }
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) row_block<E, 4>(y, ldy, w, r, x, ldx, n);
    for (; r < r1; r++) row_block<E, 1>(y, ldy, w, r, x, ldx, n);
}

void matmul_f32_avx512(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_avx512<F32>(y, ldy, w, x, ldx, n, r0, r1);
}
void matmul_f16_avx512(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_avx512<F16>(y, ldy, w, x, ldx, n, r0, r1);
}
void matmul_bf16_avx512(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_avx512<BF16>(y, ldy, w, x, ldx, n, r0, r1);
}
}  // namespace

void fill_float_avx512(KernelTable& t) {
    TRIBIT_SET_FLOAT_KERNEL(t, f32, matmul_f32_avx512);
    TRIBIT_SET_FLOAT_KERNEL(t, f16, matmul_f16_avx512);
    TRIBIT_SET_FLOAT_KERNEL(t, bf16, matmul_bf16_avx512);
}

}  // namespace tribit
