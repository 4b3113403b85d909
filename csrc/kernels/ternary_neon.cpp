// NEON ternary matmul (AArch64), a straightforward version on the common 2-bit
// layout. Baseline Advanced SIMD only (no dotprod, no fp16 arithmetic) so that it
// runs on every ARMv8-A core: code (0..2) x int8 products are exact in int16
// (vmull_s8) and widen pairwise into int32 (vpadalq_s16). Quantization stays generic.
#include <arm_neon.h>

#include "kernels.h"

namespace tribit {
namespace {

inline int32x4_t dot16(int32x4_t acc, int8x16_t c, int8x16_t a) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(c), vget_low_s8(a)));
    return vpadalq_s16(acc, vmull_high_s8(c, a));
}

// sum over one 128-weight block of code * q: byte p of the block holds the codes
// of weights p, 32+p, 64+p, 96+p in bits 0-1, 2-3, 4-5, 6-7 (kernels.h)
inline int32x4_t block_dot(int32x4_t acc, const uint8_t* wb, const int8_t* qb) {
    const uint8x16_t m3 = vdupq_n_u8(3);
    for (int h = 0; h < 2; h++) {
        const uint8x16_t v = vld1q_u8(wb + 16 * h);
        const int8_t* q = qb + 16 * h;
        acc = dot16(acc, vreinterpretq_s8_u8(vandq_u8(v, m3)), vld1q_s8(q));
        acc = dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 2), m3)), vld1q_s8(q + 32));
        acc = dot16(acc, vreinterpretq_s8_u8(vandq_u8(vshrq_n_u8(v, 4), m3)), vld1q_s8(q + 64));
        acc = dot16(acc, vreinterpretq_s8_u8(vshrq_n_u8(v, 6)), vld1q_s8(q + 96));
    }
    return acc;
}

// One kernel serves decode and prefill: 2 rows share each activation load.
void ternary_matmul_i2_neon(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                            int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                         int64_t row_begin, int64_t row_end) {
    const int64_t nblk = w.k_pad / kTernaryBlock;
    for (int64_t j = 0; j < n; j++) {
        const int8_t* qj = q + j * ldq;
        const float post = w.gamma / scale[j];
        int64_t r = row_begin;
        for (; r + 2 <= row_end; r += 2) {
            const uint8_t* r0 = w.data + r * w.row_bytes;
            const uint8_t* r1 = r0 + w.row_bytes;
            int32x4_t a0 = vdupq_n_s32(0), a1 = vdupq_n_s32(0);
            for (int64_t b = 0; b < nblk; b++) {
                a0 = block_dot(a0, r0 + b * 32, qj + b * kTernaryBlock);
                a1 = block_dot(a1, r1 + b * 32, qj + b * kTernaryBlock);
            }
            y[j * ldy + r] = float(vaddvq_s32(a0) - sum_q[j]) * post;
            y[j * ldy + r + 1] = float(vaddvq_s32(a1) - sum_q[j]) * post;
        }
        for (; r < row_end; r++) {
            const uint8_t* row = w.data + r * w.row_bytes;
            int32x4_t a = vdupq_n_s32(0);
            for (int64_t b = 0; b < nblk; b++) a = block_dot(a, row + b * 32, qj + b * kTernaryBlock);
            y[j * ldy + r] = float(vaddvq_s32(a) - sum_q[j]) * post;
        }
    }
}

}  // namespace

void fill_ternary_neon(KernelTable& t) {
    // one kernel for decode and prefill
    TRIBIT_SET_KERNEL(t, ternary_gemv, ternary_matmul_i2_neon);
    TRIBIT_SET_KERNEL(t, ternary_gemm, ternary_matmul_i2_neon);
}

}  // namespace tribit
