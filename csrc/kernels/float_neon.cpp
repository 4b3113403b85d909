// NEON float kernels of the head (AArch64): f32 and f16 rows times float32
// activations, baseline Advanced SIMD (f16 widened with vcvt_f32_f16). The bf16,
// Q8_0 and Q6_K matmuls stay generic.
#include <arm_neon.h>

#include <cstring>

#include "kernels.h"

namespace tribit {
namespace {

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

void fill_float_neon(KernelTable& t) {
    TRIBIT_SET_FLOAT_KERNEL(t, f32, matmul_f32_neon);
    TRIBIT_SET_FLOAT_KERNEL(t, f16, matmul_f16_neon);
}

}  // namespace tribit
