// AVX-512 VNNI group matmul (Q2_0 / Q1_0 x Q8_0, mode a of kernels.h): vpdpbusd adds the
// code x q products straight into int32 (256-bit registers, the AVX2 kernel's structure,
// group_x86.h); Q1_0's bits become bytes with one masked move. Quantization from AVX2.
#include <immintrin.h>

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

void matmul_q2_0_q8_0_avx512vnni(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                                 const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    group_matmul_x86<DotVnni, GroupType::q2_0>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

void matmul_q1_0_q8_0_avx512vnni(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                                 const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    group_matmul_x86<DotVnni, GroupType::q1_0>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

}  // namespace

void fill_group_avx512(KernelTable& t) {
    TRIBIT_SET_GROUP_KERNEL(t, q2_0, matmul_q2_0_q8_0_avx512vnni);
    TRIBIT_SET_GROUP_KERNEL(t, q1_0, matmul_q1_0_q8_0_avx512vnni);
}

}  // namespace tribit
