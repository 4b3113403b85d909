// AVX2 group matmul (Q2_0 / Q1_0 x Q8_0, mode a of kernels.h) and the Q8_0 activation
// quantizer: vpmaddubsw sums code x q pairs in int16 (at most 8 steps x 2 x 3 x 128 = 6144
// per lane for Q2_0: exact), widened to int32 once per 32-weight block (group_x86.h).
#include <immintrin.h>

#include "group_x86.h"
#include "kernels.h"

namespace tribit {
namespace {

struct DotAvx2 {
    using Acc = __m256i;
    static __m256i zero() { return _mm256_setzero_si256(); }
    static __m256i step(__m256i acc, __m256i c, __m256i a) { return _mm256_add_epi16(acc, _mm256_maddubs_epi16(c, a)); }
    static __m256i finish(__m256i s0, __m256i s1) {
        return _mm256_madd_epi16(_mm256_add_epi16(s0, s1), _mm256_set1_epi16(1));
    }
    template <GroupType T>
    static __m256i unpack(const uint8_t* p) {
        static_assert(T == GroupType::q2_0, "Q1_0 has unpack_bits2");
        return unpack_q2_step(p);
    }
    // Q1_0: 32 bits to 32 bytes, byte i = 2 * bit i
    static __m256i unpack_bits2(uint32_t v) {
        const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                              2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        const __m256i bits = _mm256_set1_epi64x(0x8040201008040201LL);
        const __m256i x = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(int(v)), shuf), bits);
        const __m256i one = _mm256_min_epu8(x, _mm256_set1_epi8(1));
        return _mm256_add_epi8(one, one);
    }
    // init + the sum of each int32 lane's 4 u8 x s8 products (pairs fit int16: c <= 2)
    static __m256i dot4(__m256i init, __m256i c, __m256i a) {
        return _mm256_add_epi32(init, _mm256_madd_epi16(_mm256_maddubs_epi16(c, a), _mm256_set1_epi16(1)));
    }
};

void matmul_q2_0_q8_0_avx2(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                           const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    group_matmul_x86<DotAvx2, GroupType::q2_0>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

void matmul_q1_0_q8_0_avx2(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                           const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    group_matmul_x86<DotAvx2, GroupType::q1_0>(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

void quantize_q8_0_avx2(int8_t* q, float* d, int32_t* bsum, const float* x, int64_t ldx, int64_t n,
                        int64_t k) {
    quantize_q8_0_x86(q, d, bsum, x, ldx, n, k);
}

}  // namespace

void fill_group_avx2(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, quantize_q8_0, quantize_q8_0_avx2);
    TRIBIT_SET_GROUP_KERNEL(t, q2_0, matmul_q2_0_q8_0_avx2);
    TRIBIT_SET_GROUP_KERNEL(t, q1_0, matmul_q1_0_q8_0_avx2);
}

}  // namespace tribit
