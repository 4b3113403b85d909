// AVX-512 VNNI group matmul (Q2_0 / Q1_0 x Q8_0, mode a of kernels.h): vpdpbusd adds the
// code x q products straight into int32. Q1_0 and Q2_0 decode: 256-bit registers, the AVX2
// kernels' structure (group_x86.h); Q2_0 batches: 16-row zmm tiles over pre-unpacked codes
// (below). Q1_0's bits become bytes with one masked move. Quantization from AVX2.
#include <immintrin.h>

#include <vector>

#include "group_x86.h"
#include "kernels.h"

namespace tribit {
namespace {

struct DotVnni {
    using Acc = __m256i;
    static __m256i zero() { return _mm256_setzero_si256(); }
    static __m256i step(__m256i acc, __m256i c, __m256i a) { return _mm256_dpbusd_epi32(acc, c, a); }
    static __m256i finish(__m256i s0, __m256i s1) { return _mm256_add_epi32(s0, s1); }
    // init + the sum of each int32 lane's 4 u8 x s8 products
    static __m256i dot4(__m256i init, __m256i c, __m256i a) { return _mm256_dpbusd_epi32(init, c, a); }
    template <GroupType T>
    static __m256i unpack(const uint8_t* p) {
        static_assert(T == GroupType::q2_0, "Q1_0 has unpack_bits2");
        return unpack_q2_step(p);
    }
    // Q1_0: 32 bits to 32 bytes, byte i = 2 * bit i (one masked move)
    static __m256i unpack_bits2(uint32_t v) { return _mm256_maskz_mov_epi8(__mmask32(v), _mm256_set1_epi8(2)); }
};

// Two row groups (16 rows) in one zmm: rows of group g in the low half, g + 1 in the
// high half, so each broadcast activation load and each float epilogue op serve 16
// rows, and every vpdpbusd does 64 MACs. With 8 rows a ymm the epilogue (per 32
// activations and token: bsum, convert, two scales) and the unpacking cost more ALU
// slots than the multiplies (~0.45 of the vpdpbusd roof at 128 tokens). Lane-wise the
// operations are the ymm kernel's, in its order: the same bits (tested).
// The codes of one Q2_0 step of row groups g (low half) and g + 1 (high half).
inline __m512i unpack16(const uint8_t* p0, const uint8_t* p1) {
    int64_t v0, v1;
    std::memcpy(&v0, p0, 8);
    std::memcpy(&v1, p1, 8);
    const __m512i v = _mm512_inserti64x4(_mm512_set1_epi64(v0), _mm256_set1_epi64x(v1), 1);
    const __m512i shifts = _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6);
    return _mm512_and_si512(_mm512_srlv_epi64(v, shifts), _mm512_set1_epi8(3));
}

// Weight blocks [b0, b1) of the tile, their codes unpacked beforehand in `codes` (one zmm
// per step, unpack_pair); `acc` (one zmm per token) carries the sums across calls.
template <GroupType Type, int T>
inline void group_tile16(__m512* acc_io, const GroupMatrix& w, const int8_t* q, const float* d,
                         const int32_t* bsum, int64_t j0, int64_t g, int64_t b0, int64_t b1,
                         const __m512i* codes) {
    constexpr int per = Type == GroupType::q2_0 ? 2 : 4;  // activation blocks per weight block
    const int64_t block = per * 32, na = w.k / 32;
    const uint8_t* base0 = w.data + g * w.group_bytes;
    const uint8_t* base1 = base0 + w.group_bytes;
    __m512 acc[T];
    for (int t = 0; t < T; t++) acc[t] = acc_io[t];
    for (int64_t b = b0; b < b1; b++) {
        const uint8_t* blk0 = base0 + b * kGroupBlockBytes;
        const uint8_t* blk1 = base1 + b * kGroupBlockBytes;
        const __m512 dw = _mm512_cvtph_ps(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)blk0)), _mm_loadu_si128((const __m128i*)blk1), 1));
        __m512 tb[T];
        for (int t = 0; t < T; t++) tb[t] = _mm512_setzero_ps();
        for (int h = 0; h < per; h++) {
            __m512i s0[T], s1[T];  // even and odd steps: two independent chains
            for (int t = 0; t < T; t++) s0[t] = s1[t] = _mm512_setzero_si512();
            const int64_t qoff = b * block + h * 32;
            for (int s = 0; s < 8; s += 2) {
                const __m512i c0 = _mm512_load_si512(codes + ((b - b0) * per + h) * 8 + s);
                const __m512i c1 = _mm512_load_si512(codes + ((b - b0) * per + h) * 8 + s + 1);
                for (int t = 0; t < T; t++) {
                    const int8_t* qt = q + (j0 + t) * w.k + qoff + 4 * s;
                    int32_t a0, a1;
                    std::memcpy(&a0, qt, 4);
                    std::memcpy(&a1, qt + 4, 4);
                    s0[t] = _mm512_dpbusd_epi32(s0[t], c0, _mm512_set1_epi32(a0));
                    s1[t] = _mm512_dpbusd_epi32(s1[t], c1, _mm512_set1_epi32(a1));
                }
            }
            for (int t = 0; t < T; t++) {
                const int64_t a = (j0 + t) * na + b * per + h;
                __m512i sum = _mm512_add_epi32(s0[t], s1[t]);
                sum = _mm512_sub_epi32(sum, _mm512_set1_epi32(bsum[a]));
                tb[t] = _mm512_add_ps(tb[t], _mm512_mul_ps(_mm512_set1_ps(d[a]), _mm512_cvtepi32_ps(sum)));
            }
        }
        for (int t = 0; t < T; t++) acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(dw, tb[t]));
    }
    for (int t = 0; t < T; t++) acc_io[t] = acc[t];
}

// The codes of weight blocks [b0, b1) of row groups g, g + 1, one zmm per step.
template <GroupType Type>
void unpack_pair(__m512i* codes, const GroupMatrix& w, int64_t g, int64_t b0, int64_t b1) {
    constexpr int step_bytes = Type == GroupType::q2_0 ? 8 : 4;
    const int64_t steps = w.block / 4;
    const uint8_t* base0 = w.data + g * w.group_bytes;
    const uint8_t* base1 = base0 + w.group_bytes;
    for (int64_t b = b0; b < b1; b++)
        for (int64_t s = 0; s < steps; s++) {
            const int64_t off = b * kGroupBlockBytes + 16 + s * step_bytes;
            _mm512_store_si512(codes + (b - b0) * steps + s, unpack16(base0 + off, base1 + off));
        }
}

template <GroupType Type, int T>
inline void tile_chunk(__m512* acc, const GroupMatrix& w, const int8_t* q, const float* d, const int32_t* bsum,
                       int64_t j, int64_t g, int64_t b0, int64_t b1, const __m512i* codes) {
    group_tile16<Type, T>(acc + j, w, q, d, bsum, j, g, b0, b1, codes);
}

// Two row groups (rows r0..r1 of g, g + 1) for all n tokens. Batches walk the weights in
// chunks of 8 KiB of unpacked codes (L1): each chunk is unpacked once and every token
// tile passes over it, the per-token sums kept in `acc` between chunks.
template <GroupType Type>
void pair_rows(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d, const int32_t* bsum,
               int64_t n, int64_t g, int64_t r0, int64_t r1, __m512* acc, __m512i* codes) {
    const int64_t nb = w.k / w.block;
    const int64_t chunk = 8192 / (w.block / 4 * 64);  // weight blocks per chunk
    for (int64_t j = 0; j < n; j++) acc[j] = _mm512_setzero_ps();
    for (int64_t b0 = 0; b0 < nb; b0 += chunk) {
        const int64_t b1 = b0 + chunk < nb ? b0 + chunk : nb;
        unpack_pair<Type>(codes, w, g, b0, b1);
        int64_t j = 0;
        for (; j + 4 <= n; j += 4) tile_chunk<Type, 4>(acc, w, q, d, bsum, j, g, b0, b1, codes);
        switch (n - j) {
            case 3: tile_chunk<Type, 3>(acc, w, q, d, bsum, j, g, b0, b1, codes); break;
            case 2: tile_chunk<Type, 2>(acc, w, q, d, bsum, j, g, b0, b1, codes); break;
            case 1: tile_chunk<Type, 1>(acc, w, q, d, bsum, j, g, b0, b1, codes); break;
            default: break;
        }
    }
    const int64_t g0 = g * kGroupRows;
    for (int64_t t = 0; t < n; t++) {
        float* yt = y + t * ldy;
        if (r0 == g0 && r1 == g0 + 2 * kGroupRows) {
            _mm512_storeu_ps(yt + g0, acc[t]);
        } else {
            alignas(64) float tmp[2 * kGroupRows];
            _mm512_store_ps(tmp, acc[t]);
            for (int64_t r = r0; r < r1; r++) yt[r] = tmp[r - g0];
        }
    }
}

template <GroupType Type>
void group_matmul_avx512(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                         const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    static_assert(Type == GroupType::q2_0, "the 16-row tile reads the Q2_0 layout");
    if (row_begin >= row_end) return;
    if (n < 4) {
        // decode: the 8-row kernel streams one row group at a time from DRAM; two
        // interleaved groups defeated the hardware prefetch (0.4-0.8x, even with
        // software prefetch)
        group_matmul_x86<DotVnni, Type>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
        return;
    }
    thread_local std::vector<__m512i> codes;  // one chunk: 8 KiB
    thread_local std::vector<__m512> acc;     // one sum per token
    if (codes.size() < 8192 / 64) codes.resize(8192 / 64);
    if (acc.size() < size_t(n)) acc.resize(size_t(n));
    for (int64_t g = row_begin / kGroupRows; g * kGroupRows < row_end;) {
        const int64_t r0 = g * kGroupRows > row_begin ? g * kGroupRows : row_begin;
        if ((g + 1) * kGroupRows < row_end) {  // two groups in range: the 16-row tile
            const int64_t r1 = (g + 2) * kGroupRows < row_end ? (g + 2) * kGroupRows : row_end;
            pair_rows<Type>(y, ldy, w, q, d, bsum, n, g, r0, r1, acc.data(), codes.data());
            g += 2;
        } else {  // the last, single group: the 8-row kernel
            group_matmul_x86<DotVnni, Type>(y, ldy, w, q, d, bsum, n, r0, row_end);
            g += 1;
        }
    }
}

void matmul_q2_0_q8_0_avx512vnni(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                                 const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    group_matmul_avx512<GroupType::q2_0>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

void matmul_q1_0_q8_0_avx512vnni(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                                 const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    // Q1_0 keeps each row's bits whole (lanes = ggml's 8 steps): the 8-row kernel
    group_matmul_x86<DotVnni, GroupType::q1_0>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

}  // namespace

void fill_group_avx512(KernelTable& t) {
    TRIBIT_SET_GROUP_KERNEL(t, q2_0, matmul_q2_0_q8_0_avx512vnni);
    TRIBIT_SET_GROUP_KERNEL(t, q1_0, matmul_q1_0_q8_0_avx512vnni);
}

}  // namespace tribit
