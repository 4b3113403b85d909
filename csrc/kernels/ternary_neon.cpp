// NEON kernels (AArch64), a straightforward version on the common 2-bit layout.
// Baseline Advanced SIMD only (no dotprod, no fp16 arithmetic) so that they run
// on every ARMv8-A core: code (0..2) x int8 products are exact in int16
// (vmull_s8) and widen pairwise into int32 (vpadalq_s16). Quantization and the
// bf16 / Q8_0 matmuls stay generic.
#include <arm_neon.h>

#include <cstring>

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
void ternary_matmul_neon(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
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

// ---- float matmul (head): f32 and f16 rows, 4 accumulators ------------------
inline float32x4_t load4_f32(const uint8_t* p) { return vld1q_f32(reinterpret_cast<const float*>(p)); }
inline float32x4_t load4_f16(const uint8_t* p) {
    uint16_t h[4];
    std::memcpy(h, p, 8);
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(h)));
}

template <int ElemBytes, float32x4_t (*Load)(const uint8_t*)>
void float_matmul_neon(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx,
                       int64_t n, int64_t r0, int64_t r1) {
    const int64_t k16 = w.k / 16 * 16;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + r * w.row_bytes;
        for (int64_t j = 0; j < n; j++) {
            const float* xj = x + j * ldx;
            float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
            for (int64_t i = 0; i < k16; i += 16) {
                s0 = vfmaq_f32(s0, Load(row + i * ElemBytes), vld1q_f32(xj + i));
                s1 = vfmaq_f32(s1, Load(row + (i + 4) * ElemBytes), vld1q_f32(xj + i + 4));
                s2 = vfmaq_f32(s2, Load(row + (i + 8) * ElemBytes), vld1q_f32(xj + i + 8));
                s3 = vfmaq_f32(s3, Load(row + (i + 12) * ElemBytes), vld1q_f32(xj + i + 12));
            }
            float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
            for (int64_t i = k16; i < w.k; i++) {
                float v;
                if (ElemBytes == 4) {
                    std::memcpy(&v, row + 4 * i, 4);
                } else {
                    uint16_t h;
                    std::memcpy(&h, row + 2 * i, 2);
                    v = fp16_to_fp32(h);
                }
                s += v * xj[i];
            }
            y[j * ldy + r] = s;
        }
    }
}

void matmul_f32_neon(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx,
                     int64_t n, int64_t r0, int64_t r1) {
    float_matmul_neon<4, load4_f32>(y, ldy, w, x, ldx, n, r0, r1);
}
void matmul_f16_neon(float* y, int64_t ldy, const FloatMatrix& w, const float* x, int64_t ldx,
                     int64_t n, int64_t r0, int64_t r1) {
    float_matmul_neon<2, load4_f16>(y, ldy, w, x, ldx, n, r0, r1);
}

}  // namespace

void fill_table_neon(KernelTable& t) {
    t.ternary_gemv = ternary_matmul_neon;
    t.ternary_gemv_name = "ternary_gemv_i2_neon";
    t.ternary_gemm = ternary_matmul_neon;
    t.ternary_gemm_name = "ternary_gemm_i2_neon";
    t.float_matmul[int(FloatType::f32)] = matmul_f32_neon;
    t.float_matmul[int(FloatType::f16)] = matmul_f16_neon;
    t.float_matmul_name[int(FloatType::f32)] = "matmul_f32_neon";
    t.float_matmul_name[int(FloatType::f16)] = "matmul_f16_neon";
}

}  // namespace tribit
