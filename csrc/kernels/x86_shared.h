// Helpers shared by the x86 kernels (the AVX2 files and the AVX-512 ones, which
// use 256-bit registers too): horizontal sums and the unpacking of the common
// ternary layout (kernels.h). Included only by files compiled with at least the
// AVX2 flags. Internal linkage (an anonymous namespace): each file gets its own
// copy, compiled with its own flags, so an AVX-512 build of a helper can never
// stand in for the AVX2 one at link time.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels.h"

namespace tribit {
namespace {

inline int32_t hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// A float row's values as f32, 8 at a time (f32; f16 through F16C; bf16 by a 16-bit
// shift) and one at a time for the tails: the float head kernels of every x86 ISA.
inline __m256 load8_f32(const uint8_t* p) { return _mm256_loadu_ps((const float*)p); }
inline __m256 load8_f16(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
inline __m256 load8_bf16(const uint8_t* p) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
inline float scalar_f32(const uint8_t* row, int64_t i) { float v; std::memcpy(&v, row + 4 * i, 4); return v; }
inline float scalar_f16(const uint8_t* row, int64_t i) { uint16_t h; std::memcpy(&h, row + 2 * i, 2); return fp16_to_fp32(h); }
inline float scalar_bf16(const uint8_t* row, int64_t i) { uint16_t h; std::memcpy(&h, row + 2 * i, 2); return bf16_to_fp32(h); }

inline float hsum_f32(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// The four 32-lane planes of code (0..2) of one 32-byte block (the layout in
// kernels.h): plane i holds the weights i*32 .. i*32+31 of the block.
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

// The 4 int32 sums of 4 accumulators (lanes 0..3 of the result; integer adds
// in another order give the same sums).
inline __m128i hsum4_i32(__m256i a0, __m256i a1, __m256i a2, __m256i a3) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// The 6-bit codes (0..63) of 128-value half h of a Q6_K super-block (kernels.h): v[p]
// holds values 32p + l, l < 32 (sub-blocks 8h + 2p in the low 128 bits, 8h + 2p + 1 in
// the high): low nibbles of ql[64h ..] and ql[64h + 32 ..], then their high nibbles; the
// two high bits from qh[32h + l] bits 2p, 2p + 1, moved to bits 4-5.
inline void unpack_q6_k_half(const uint8_t* blk, int h, __m256i v[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x30);
    const __m256i la = _mm256_loadu_si256((const __m256i*)(blk + 64 * h));
    const __m256i lb = _mm256_loadu_si256((const __m256i*)(blk + 64 * h + 32));
    const __m256i hb = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
    v[0] = _mm256_or_si256(_mm256_and_si256(la, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 4), m2));
    v[1] = _mm256_or_si256(_mm256_and_si256(lb, m4), _mm256_and_si256(_mm256_slli_epi16(hb, 2), m2));
    v[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(la, 4), m4), _mm256_and_si256(hb, m2));
    v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lb, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(hb, 2), m2));
}

// Runs tile(std::integral_constant<int, NT>, j) over the n tokens of a row: tiles of 4
// tokens, then one of 3, 2 or 1 (each token's sums are the same in any tile).
template <class Tile>
inline void for_token_tiles(int64_t n, Tile&& tile) {
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) tile(std::integral_constant<int, 4>{}, j);
    switch (n - j) {
        case 3: tile(std::integral_constant<int, 3>{}, j); break;
        case 2: tile(std::integral_constant<int, 2>{}, j); break;
        case 1: tile(std::integral_constant<int, 1>{}, j); break;
        default: break;
    }
}

}  // namespace
}  // namespace tribit
