// AVX2 float kernels of the head (x86-64 with AVX2 + FMA + F16C): f32, f16, bf16,
// Q8_0 and Q6_K rows times float32 activations.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels.h"
#include "x86_shared.h"

namespace tribit {
namespace {

// The end of one (row, token) sum from its four chains (c, summed up to weight i):
// the 8-weight steps into chain 0, ((c0 + c1) + (c2 + c3)) across lanes, the scalar
// tail. Shared by the pair loop and the batch blocks, so both end in one order.
template <int ElemBytes, __m256 (*Load)(const uint8_t*)>
inline float finish(__m256* c, const uint8_t* row, const float* x, int64_t i, int64_t k,
                    float (*scalar)(const uint8_t*, int64_t)) {
    const int64_t k8 = k / 8 * 8;
    for (; i < k8; i += 8) c[0] = _mm256_fmadd_ps(Load(row + i * ElemBytes), _mm256_loadu_ps(x + i), c[0]);
    float s = hsum_f32(_mm256_add_ps(_mm256_add_ps(c[0], c[1]), _mm256_add_ps(c[2], c[3])));
    for (int64_t m = k8; m < k; m++) s += scalar(row, m) * x[m];
    return s;
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
    for (int t = 0; t < T; t++) *out[t] = finish<ElemBytes, Load>(acc[t], row, xs[t], i, k, scalar);
}

// Batches (6 tokens or more): blocks of R rows x up to kGroup tokens. The block's
// weights are widened to f32 once per chunk of kChunk values (an L1 buffer) and
// used by every token tile of the group. The four chains of a (row, token) sum
// are independent (chain q takes weights i + 8q of every 32-weight step), so over
// a chunk chain q runs alone for a tile of R rows x T tokens: R x T accumulators
// in registers, each step loading R weight and T activation vectors for R x T
// FMAs; the sums wait in `state` between chunks. Every chain sees the same FMAs in
// the same order as in float_row_dot, so the logits are the same bits as a token
// alone. The next block's rows are prefetched a third of a chunk before each tile
// call: prefetched in one burst while widening, they ran no faster than the
// per-pair kernel (the tile loop alone reaches ~36 GMAC/s here, the whole kernel
// ~21: widening and the row stream take the rest; BENCHMARKS.md).
constexpr int kGroup = 12;
constexpr int64_t kChunk = 512;

template <int R, int T>
inline void tile_chunk(__m256 (*state)[kGroup][4], const float* wbuf, const float* const* xs, int64_t c,
                       int64_t len, int t0) {
    for (int q = 0; q < 4; q++) {
        __m256 acc[R][T];
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) acc[r][t] = state[r][t0 + t][q];
        for (int64_t i = 8 * q; i < len; i += 32) {
            __m256 xv[T];
            for (int t = 0; t < T; t++) xv[t] = _mm256_loadu_ps(xs[t0 + t] + c + i);
            for (int r = 0; r < R; r++) {
                const __m256 wv = _mm256_load_ps(wbuf + r * kChunk + i);
                for (int t = 0; t < T; t++) acc[r][t] = _mm256_fmadd_ps(wv, xv[t], acc[r][t]);
            }
        }
        for (int r = 0; r < R; r++)
            for (int t = 0; t < T; t++) state[r][t0 + t][q] = acc[r][t];
    }
}

template <int R, int ElemBytes, __m256 (*Load)(const uint8_t*)>
void float_rows(float* y, int64_t ldy, const FloatMatrix& w, int64_t r0, const float* x, int64_t ldx, int64_t n,
                float (*scalar)(const uint8_t*, int64_t)) {
    const int64_t k32 = w.k / 8 * 8 / 32 * 32;  // the 32-weight steps of every chain
    const uint8_t* rows[R];
    for (int r = 0; r < R; r++) rows[r] = w.data + (r0 + r) * w.row_bytes;
    alignas(32) float wbuf[R * kChunk];
    alignas(32) __m256 state[R][kGroup][4];
    for (int64_t j0 = 0; j0 < n; j0 += kGroup) {
        const int g = int(n - j0 < kGroup ? n - j0 : kGroup);
        const float* xs[kGroup];
        for (int t = 0; t < g; t++) xs[t] = x + (j0 + t) * ldx;
        for (int r = 0; r < R; r++)
            for (int t = 0; t < g; t++)
                for (int q = 0; q < 4; q++) state[r][t][q] = _mm256_setzero_ps();
        for (int64_t c = 0; c < k32; c += kChunk) {
            const int64_t len = k32 - c < kChunk ? k32 - c : kChunk;
            for (int r = 0; r < R; r++)
                for (int64_t i = 0; i < len; i += 8)
                    _mm256_store_ps(wbuf + r * kChunk + i, Load(rows[r] + (c + i) * ElemBytes));
            // the same chunk of the next block, a third before each tile call: streamed
            // from memory while this block computes (prefetches never fault past the end)
            const int64_t cb = len * ElemBytes, part = (cb / 64 + 2) / 3 * 64;
            int64_t pf = 0;
            auto prefetch_part = [&]() {
                if (j0 != 0) return;
                for (int64_t e = pf + part < cb ? pf + part : cb; pf < e; pf += 64)
                    for (int r = 0; r < R; r++)
                        _mm_prefetch((const char*)(rows[r] + R * w.row_bytes + c * ElemBytes + pf), _MM_HINT_T0);
            };
            int t = 0;
            for (; t + 3 <= g; t += 3) prefetch_part(), tile_chunk<R, 3>(state, wbuf, xs, c, len, t);
            prefetch_part();
            if (g - t == 2) tile_chunk<R, 2>(state, wbuf, xs, c, len, t);
            if (g - t == 1) tile_chunk<R, 1>(state, wbuf, xs, c, len, t);
        }
        for (int r = 0; r < R; r++)
            for (int t = 0; t < g; t++)
                y[(j0 + t) * ldy + r0 + r] = finish<ElemBytes, Load>(state[r][t], rows[r], xs[t], k32, w.k, scalar);
    }
}

// Decode and batches of up to 5: two tokens at a time per row (each weight vector
// widened once for both), then the odd one, each row streamed once; batches of
// 6 or more: the row blocks above (f16 head 128256 x 2560, 1 thread, Zen 2: 8
// tokens 155-161 -> 126-138 ms, 16 tokens 303 -> 264 ms; 4 tokens were 4 % slower
// in blocks). elem_bytes = bytes per weight.
template <int ElemBytes, __m256 (*Load)(const uint8_t*)>
void float_matmul_avx2(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx,
                       int64_t n, int64_t r0, int64_t r1, float (*scalar)(const uint8_t*, int64_t)) {
    if (n >= 6) {
        int64_t r = r0;
        for (; r + 3 <= r1; r += 3) float_rows<3, ElemBytes, Load>(y, ldy, w, r, x, ldx, n, scalar);
        for (; r < r1; r++) float_rows<1, ElemBytes, Load>(y, ldy, w, r, x, ldx, n, scalar);
        return;
    }
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
