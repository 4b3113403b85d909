// AVX2 ternary kernels (x86-64 with AVX2 + FMA + F16C): activation quantization,
// the ternary GEMV (decode) and GEMM (prefill), and the GEMM's compute-roof probe.
// No VNNI: u8 x s8 products go through _mm256_maddubs_epi16 (codes <= 2, so pair
// sums fit int16 exactly), accumulate in int16 for a bounded number of blocks, then
// widen to int32.
#include <immintrin.h>

#include <cmath>
#include <cstring>

#include "kernels.h"
#include "x86_shared.h"

namespace tribit {
namespace {

// A block adds at most 4 * 2 * 2 * 128 = 2048 per int16 lane: 15 blocks stay
// below 32767.
constexpr int64_t kFlushBlocks = 15;

// sum over one 128-weight block of code * q, as 16 int16 lanes
inline __m256i dot_planes(const __m256i c[4], const __m256i a[4]) {
    __m256i p0 = _mm256_maddubs_epi16(c[0], a[0]);
    __m256i p1 = _mm256_maddubs_epi16(c[1], a[1]);
    __m256i p2 = _mm256_maddubs_epi16(c[2], a[2]);
    __m256i p3 = _mm256_maddubs_epi16(c[3], a[3]);
    return _mm256_add_epi16(_mm256_add_epi16(p0, p1), _mm256_add_epi16(p2, p3));
}

void quantize_act_i8_avx2(int8_t* q, int64_t ldq, float* scale, int32_t* sum_q, const float* x,
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
void ternary_gemv_i2_avx2(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
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
void ternary_gemm_i2_avx2(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
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

void fill_ternary_avx2(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, quantize_act, quantize_act_i8_avx2);
    TRIBIT_SET_KERNEL(t, ternary_gemv, ternary_gemv_i2_avx2);
    TRIBIT_SET_KERNEL(t, ternary_gemm, ternary_gemm_i2_avx2);
    t.mac_probe = mac_probe_avx2;
}

}  // namespace tribit
