// AVX2 kernels (x86-64 with AVX2 + FMA + F16C). No VNNI: u8 x s8 products go
// through _mm256_maddubs_epi16 (codes <= 2, so pair sums fit int16 exactly),
// accumulate in int16 for a bounded number of blocks, then widen to int32.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels.h"

namespace tribit {
namespace {

// A block adds at most 4 * 2 * 2 * 128 = 2048 per int16 lane: 15 blocks stay
// below 32767.
constexpr int64_t kFlushBlocks = 15;

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

inline float hsum_f32(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The four 32-lane planes of code (0..2) of one 32-byte block (see the layout
// in KERNELS.md): plane i holds the weights i*32 .. i*32+31 of the block.
inline void unpack_planes(__m256i v, __m256i m3, __m256i c[4]) {
    c[0] = _mm256_and_si256(v, m3);
    c[1] = _mm256_and_si256(_mm256_srli_epi16(v, 2), m3);
    c[2] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m3);
    c[3] = _mm256_and_si256(_mm256_srli_epi16(v, 6), m3);
}

// The 128 activations of one block, as four registers lined up with the planes.
inline void load_block(const int8_t* qb, __m256i a[4]) {
    for (int i = 0; i < 4; i++) a[i] = _mm256_loadu_si256((const __m256i*)(qb + 32 * i));
}

// sum over one 128-weight block of code * q, as 16 int16 lanes
inline __m256i dot_planes(const __m256i c[4], const __m256i a[4]) {
    __m256i p0 = _mm256_maddubs_epi16(c[0], a[0]);
    __m256i p1 = _mm256_maddubs_epi16(c[1], a[1]);
    __m256i p2 = _mm256_maddubs_epi16(c[2], a[2]);
    __m256i p3 = _mm256_maddubs_epi16(c[3], a[3]);
    return _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
}

void quantize_act_avx2(int8_t* q, int64_t ldq, float* scale, int32_t* sum_q, const float* x,
                       int64_t ldx, int64_t n, int64_t k) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int64_t j = 0; j < n; j++) {
        const float* xr = x + j * ldx;
        int8_t* qr = q + j * ldq;
        __m256 vmax = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 8 <= k; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xr + i)));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        for (; i < k; i++) amax = std::fmax(amax, std::fabs(xr[i]));
        const float s = 127.0f / std::fmax(amax, 1e-5f);
        const __m256 vs = _mm256_set1_ps(s);
        const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
        __m256i vsum = _mm256_setzero_si256();
        const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        i = 0;
        for (; i + 32 <= k; i += 32) {
            __m256i v[4];
            for (int u = 0; u < 4; u++) {
                __m256 f = _mm256_mul_ps(_mm256_loadu_ps(xr + i + 8 * u), vs);
                f = _mm256_round_ps(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                f = _mm256_min_ps(hi, _mm256_max_ps(lo, f));
                v[u] = _mm256_cvtps_epi32(f);
                vsum = _mm256_add_epi32(vsum, v[u]);
            }
            __m256i a = _mm256_packs_epi32(v[0], v[1]);
            __m256i b = _mm256_packs_epi32(v[2], v[3]);
            __m256i p = _mm256_packs_epi16(a, b);
            _mm256_storeu_si256((__m256i*)(qr + i), _mm256_permutevar8x32_epi32(p, perm));
        }
        int32_t sum = hsum_i32(vsum);
        for (; i < k; i++) {
            float v = std::nearbyint(xr[i] * s);
            v = std::fmin(127.0f, std::fmax(-128.0f, v));
            qr[i] = int8_t(v);
            sum += qr[i];
        }
        if (ldq > k) std::memset(qr + k, 0, size_t(ldq - k));
        scale[j] = s;
        sum_q[j] = sum;
    }
}

// Decode: 4 rows at a time share each activation load.
void ternary_gemv_avx2(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                       int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                       int64_t row_begin, int64_t row_end) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    for (int64_t j = 0; j < n; j++) {
        const int8_t* qj = q + j * ldq;
        const float post = w.gamma / scale[j];
        int64_t r = row_begin;
        for (; r + 4 <= row_end; r += 4) {
            const uint8_t* rows[4];
            __m256i acc[4], acc16[4];
            for (int i = 0; i < 4; i++) {
                rows[i] = w.data + (r + i) * w.row_bytes;
                acc[i] = _mm256_setzero_si256();
                acc16[i] = _mm256_setzero_si256();
            }
            for (int64_t b0 = 0; b0 < nblk; b0 += kFlushBlocks) {
                const int64_t b1 = b0 + kFlushBlocks < nblk ? b0 + kFlushBlocks : nblk;
                for (int64_t b = b0; b < b1; b++) {
                    __m256i a[4], c[4];
                    load_block(qj + b * kTernaryBlock, a);
                    // The 4 rows are contiguous: stream the next group in, one group ahead
                    // (2 lines per block covers it; a prefetch past the end never faults).
                    // Without this, DRAM-resident GEMV runs at ~0.3 of read bandwidth.
                    _mm_prefetch((const char*)(rows[0] + 4 * w.row_bytes + b * 128), _MM_HINT_T0);
                    _mm_prefetch((const char*)(rows[0] + 4 * w.row_bytes + b * 128 + 64), _MM_HINT_T0);
                    for (int i = 0; i < 4; i++) {
                        unpack_planes(_mm256_load_si256((const __m256i*)(rows[i] + b * 32)), m3, c);
                        acc16[i] = _mm256_add_epi16(acc16[i], dot_planes(c, a));
                    }
                }
                for (int i = 0; i < 4; i++) {
                    acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(acc16[i], ones));
                    acc16[i] = _mm256_setzero_si256();
                }
            }
            for (int i = 0; i < 4; i++) y[j * ldy + r + i] = float(hsum_i32(acc[i]) - sum_q[j]) * post;
        }
        for (; r < row_end; r++) {
            const uint8_t* row = w.data + r * w.row_bytes;
            __m256i acc = _mm256_setzero_si256();
            for (int64_t b0 = 0; b0 < nblk; b0 += kFlushBlocks) {
                const int64_t b1 = b0 + kFlushBlocks < nblk ? b0 + kFlushBlocks : nblk;
                __m256i acc16 = _mm256_setzero_si256();
                for (int64_t b = b0; b < b1; b++) {
                    __m256i a[4], c[4];
                    unpack_planes(_mm256_load_si256((const __m256i*)(row + b * 32)), m3, c);
                    load_block(qj + b * kTernaryBlock, a);
                    acc16 = _mm256_add_epi16(acc16, dot_planes(c, a));
                }
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(acc16, ones));
            }
            y[j * ldy + r] = float(hsum_i32(acc) - sum_q[j]) * post;
        }
    }
}

// The 4 int32 sums of 4 accumulators (lanes 0..3 of the result; integer adds
// in another order give the same sums).
inline __m128i hsum4_i32(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// One row tile x T tokens (T = 1..4): each row's codes are unpacked once per
// block and reused for the T tokens. The next rows are prefetched, so a small
// batch (decode of 2-3 sequences) streams the weights from DRAM once, as the
// GEMV does, instead of once per token. The epilogue is vectorized over the T
// tokens (one horizontal reduction for all, the per-token factors hoisted out
// of the row loop): with K = 2560 it took ~1/5 of the time in scalar code.
template <int T>
inline void gemm_tile(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q, int64_t ldq,
                      const float* scale, const int32_t* sum_q, int64_t j0, int64_t r0, int64_t r1) {
    const __m256i m3 = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
    const int64_t nblk = w.k_pad / kTernaryBlock;
    const int8_t* qt[T];
    alignas(16) float post[4] = {0, 0, 0, 0};
    alignas(16) int32_t sq[4] = {0, 0, 0, 0};
    for (int t = 0; t < T; t++) {
        qt[t] = q + (j0 + t) * ldq;
        post[t] = w.gamma / scale[j0 + t];
        sq[t] = sum_q[j0 + t];
    }
    const __m128 vpost = _mm_load_ps(post);
    const __m128i vsq = _mm_load_si128((const __m128i*)sq);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + r * w.row_bytes;
        const uint8_t* ahead = row + 2 * w.row_bytes;  // never dereferenced: prefetch only
        __m256i acc[4], acc16[T];
        for (int t = 0; t < 4; t++) acc[t] = _mm256_setzero_si256();
        for (int t = 0; t < T; t++) acc16[t] = _mm256_setzero_si256();
        for (int64_t b0 = 0; b0 < nblk; b0 += kFlushBlocks) {
            const int64_t b1 = b0 + kFlushBlocks < nblk ? b0 + kFlushBlocks : nblk;
            for (int64_t b = b0; b < b1; b++) {
                if ((b & 1) == 0) _mm_prefetch((const char*)(ahead + b * 32), _MM_HINT_T0);
                __m256i c[4];
                unpack_planes(_mm256_load_si256((const __m256i*)(row + b * 32)), m3, c);
                for (int t = 0; t < T; t++) {
                    __m256i a[4];
                    load_block(qt[t] + b * kTernaryBlock, a);
                    acc16[t] = _mm256_add_epi16(acc16[t], dot_planes(c, a));
                }
            }
            for (int t = 0; t < T; t++) {
                acc[t] = _mm256_add_epi32(acc[t], _mm256_madd_epi16(acc16[t], ones));
                acc16[t] = _mm256_setzero_si256();
            }
        }
        // float(sum - sum_q) * (gamma / scale): the scalar formula, per lane
        const __m128i s = _mm_sub_epi32(hsum4_i32(acc[0], acc[1], acc[2], acc[3]), vsq);
        alignas(16) float out[4];
        _mm_store_ps(out, _mm_mul_ps(_mm_cvtepi32_ps(s), vpost));
        for (int t = 0; t < T; t++) y[(j0 + t) * ldy + r] = out[t];
    }
}

// Prefill and small batches: rows are walked in small tiles so their weights
// stay in cache while every token tile (4 tokens, then the 1-3 left) passes
// over them.
void ternary_gemm_avx2(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                       int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                       int64_t row_begin, int64_t row_end) {
    constexpr int kTok = 4;
    constexpr int64_t kRowTile = 16;
    const int64_t n_full = n / kTok * kTok;
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kRowTile) {
        const int64_t r1 = r0 + kRowTile < row_end ? r0 + kRowTile : row_end;
        for (int64_t j0 = 0; j0 < n_full; j0 += kTok)
            gemm_tile<kTok>(y, ldy, w, q, ldq, scale, sum_q, j0, r0, r1);
        switch (n - n_full) {
            case 3: gemm_tile<3>(y, ldy, w, q, ldq, scale, sum_q, n_full, r0, r1); break;
            case 2: gemm_tile<2>(y, ldy, w, q, ldq, scale, sum_q, n_full, r0, r1); break;
            case 1: gemm_tile<1>(y, ldy, w, q, ldq, scale, sum_q, n_full, r0, r1); break;
            default: break;
        }
    }
}

// ---- float matmul (head) ----------------------------------------------------
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
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30), off = _mm256_set1_epi8(32);
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
            const __m256i la = _mm256_loadu_si256((const __m256i*)(blk + 64 * h));
            const __m256i lb = _mm256_loadu_si256((const __m256i*)(blk + 64 * h + 32));
            const __m256i hb = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
            // values l, l+32, l+64, l+96 of the half: low nibbles of la, lb, high of la, lb;
            // high bits from hb bits 0-1, 2-3, 4-5, 6-7 moved to bits 4-5
            __m256i v[4];
            v[0] = _mm256_or_si256(_mm256_and_si256(la, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
            v[1] = _mm256_or_si256(_mm256_and_si256(lb, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
            v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), _mm256_and_si256(hb, m2));
            v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
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
    for (int64_t r = r0; r < r1; r++) {
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) q6_k_tile<4>(y, ldy, w, x, ldx, j, r);
        switch (n - j) {
            case 3: q6_k_tile<3>(y, ldy, w, x, ldx, j, r); break;
            case 2: q6_k_tile<2>(y, ldy, w, x, ldx, j, r); break;
            case 1: q6_k_tile<1>(y, ldy, w, x, ldx, j, r); break;
            default: break;
        }
    }
}

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
void dot_rows_avx2(double* out, const double* a, int64_t lda, int64_t rows, const B* b, int64_t n) {
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
            out[g + r] = s;
        }
    }
    for (; g < rows; g++) out[g] = dot_avx2(a + g * lda, b, n);
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

double dot_f32_avx2(const double* a, const float* b, int64_t n) { return dot_avx2(a, b, n); }
double dot_f16_avx2(const double* a, const uint16_t* b, int64_t n) { return dot_avx2(a, b, n); }
void axpy_f32_avx2(double* y, double a, const float* x, int64_t n) { axpy_avx2(y, a, x, n); }
void axpy_f16_avx2(double* y, double a, const uint16_t* x, int64_t n) { axpy_avx2(y, a, x, n); }

// The GEMM's inner loop costs one vpmaddubsw + one vpaddw per 32 weights and
// token (plus the code unpacking, shared by the token tile); this runs that
// pair alone: 8 independent sums per round, in fixed registers (written in asm:
// with intrinsics the compiler kept some sums on the stack). Register contents
// are whatever they were: the timing of these instructions does not depend on data.
int64_t mac_probe_avx2(int64_t iters) {
    for (int64_t it = 0; it < iters; it++)
        __asm__ volatile(
            "vpmaddubsw %%ymm12, %%ymm8, %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm0, %%ymm0\n\t"
            "vpmaddubsw %%ymm12, %%ymm9, %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm1, %%ymm1\n\t"
            "vpmaddubsw %%ymm12, %%ymm10, %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm2, %%ymm2\n\t"
            "vpmaddubsw %%ymm12, %%ymm11, %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm3, %%ymm3\n\t"
            "vpmaddubsw %%ymm13, %%ymm8, %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm4, %%ymm4\n\t"
            "vpmaddubsw %%ymm13, %%ymm9, %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm5, %%ymm5\n\t"
            "vpmaddubsw %%ymm13, %%ymm10, %%ymm14\n\t"
            "vpaddw %%ymm14, %%ymm6, %%ymm6\n\t"
            "vpmaddubsw %%ymm13, %%ymm11, %%ymm15\n\t"
            "vpaddw %%ymm15, %%ymm7, %%ymm7\n\t"
            ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm14", "xmm15");
    _mm256_zeroupper();
    return iters * 8 * 32;
}

}  // namespace

void fill_table_avx2(KernelTable& t) {
    t.cvt_f32_f16 = cvt_f32_f16_avx2;
    t.dot_f32 = dot_f32_avx2;
    t.axpy_f32 = axpy_f32_avx2;
    t.dot_f16 = dot_f16_avx2;
    t.axpy_f16 = axpy_f16_avx2;
    t.dot_rows_f32 = dot_rows_avx2<float>;
    t.dot_rows_f16 = dot_rows_avx2<uint16_t>;
    t.wsum_rows_f32 = wsum_rows_avx2<float>;
    t.wsum_rows_f16 = wsum_rows_avx2<uint16_t>;
    t.quantize_act = quantize_act_avx2;
    t.quantize_act_name = "quantize_act_i8_avx2";
    t.ternary_gemv = ternary_gemv_avx2;
    t.ternary_gemv_name = "ternary_gemv_i2_avx2";
    t.ternary_gemm = ternary_gemm_avx2;
    t.ternary_gemm_name = "ternary_gemm_i2_avx2";
    t.mac_probe = mac_probe_avx2;
    t.float_matmul[int(FloatType::f32)] = matmul_f32_avx2;
    t.float_matmul[int(FloatType::f16)] = matmul_f16_avx2;
    t.float_matmul[int(FloatType::bf16)] = matmul_bf16_avx2;
    t.float_matmul[int(FloatType::q8_0)] = matmul_q8_0_avx2;
    t.float_matmul_name[0] = "matmul_f32_avx2";
    t.float_matmul_name[1] = "matmul_f16_avx2";
    t.float_matmul_name[2] = "matmul_bf16_avx2";
    t.float_matmul_name[3] = "matmul_q8_0_avx2";
    t.float_matmul[int(FloatType::q6_k)] = matmul_q6_k_avx2;
    t.float_matmul_name[int(FloatType::q6_k)] = "matmul_q6_k_avx2";
}

}  // namespace tribit
