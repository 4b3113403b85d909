// Helpers shared by the x86 kernels (the AVX2 files and the AVX-512 ones, which
// use 256-bit registers too): horizontal sums and the unpacking of the common
// ternary layout (kernels.h). Included only by files compiled with at least the
// AVX2 flags. Internal linkage (an anonymous namespace): each file gets its own
// copy, compiled with its own flags, so an AVX-512 build of a helper can never
// stand in for the AVX2 one at link time.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace tribit {
namespace {

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

}  // namespace
}  // namespace tribit
