// The q6_k head's integer path, scalar reference (kernels.h, docs/KERNELS.md "The
// Q6_K head's integer path"): activations quantized to q8_K as llama.cpp's quantize_row_q8_K_ref does,
// then per 256-value super-block an exact int32 sum of 6-bit codes times 8-bit codes
// weighted by the int8 sub-block scales (llama.cpp's ggml_vec_dot_q6_K_q8_K), and
// one float32 multiply-add per super-block in block order. The SIMD variants give
// the same bits; tribit.quant.quantize_q8_k is the numpy spec of the quantizer.
#include <cmath>
#include <cstring>

#include "kernels.h"

namespace tribit {
namespace {

// round half to even by adding 1.5 * 2^23 in float32 (ggml's nearest_int); every
// value here is |v| <= 127.5
inline int round_q8(float v) {
    const float t = v + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &t, 4);
    return (i & 0x007FFFFF) - 0x00400000;
}

void quantize_q8_k_generic(uint8_t* q, int64_t ldq, const float* x, int64_t ldx, int64_t n, int64_t k) {
    const int64_t nb = k / kQ6KBlock;
    for (int64_t j = 0; j < n; j++) {
        for (int64_t b = 0; b < nb; b++) {
            const float* xb = x + j * ldx + b * kQ6KBlock;
            uint8_t* out = q + j * ldq + b * kQ8KBlockBytes;
            int8_t qs[256];
            int16_t bsums[16];
            float max = 0, amax = 0;
            for (int i = 0; i < 256; i++) {
                const float ax = std::fabs(xb[i]);
                if (ax > amax) { amax = ax; max = xb[i]; }
            }
            float d = 0;
            if (amax == 0.0f) {
                std::memset(qs, 0, sizeof qs);
            } else {
                const float iscale = -127.0f / max;
                for (int i = 0; i < 256; i++) {
                    const int v = round_q8(iscale * xb[i]);
                    qs[i] = int8_t(v < 127 ? v : 127);
                }
                d = 1.0f / iscale;
            }
            for (int s = 0; s < 16; s++) {
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += qs[16 * s + i];
                bsums[s] = int16_t(sum);
            }
            std::memcpy(out, &d, 4);
            std::memcpy(out + 4, qs, 256);
            std::memcpy(out + 260, bsums, 32);
        }
    }
}

// The 6-bit code (0..63) of value j of a super-block (layout: kquants.py).
inline int q6_code(const uint8_t* blk, int j) {
    const int half = j / 128, p = (j % 128) / 32, l = j % 32;
    const uint8_t lo = blk[half * 64 + l + 32 * (p & 1)];
    return (p >= 2 ? lo >> 4 : lo & 0xF) | (((blk[128 + half * 32 + l] >> (2 * p)) & 3) << 4);
}

void matmul_q6_k_q8_k_generic(float* y, int64_t ldy, const FloatMatrix& w, const uint8_t* q,
                              int64_t ldq, int64_t n, int64_t r0, int64_t r1) {
    const int64_t nb = w.k / kQ6KBlock;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + r * w.row_bytes;
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t* blk = row + b * kQ6KBlockBytes;
                const uint8_t* xb = q + j * ldq + b * kQ8KBlockBytes;
                const int8_t* qs = reinterpret_cast<const int8_t*>(xb + 4);
                int32_t sum = 0, corr = 0;
                for (int s = 0; s < 16; s++) {
                    const int32_t sc = int8_t(blk[192 + s]);
                    int32_t dot = 0;
                    for (int i = 16 * s; i < 16 * s + 16; i++) dot += q6_code(blk, i) * qs[i];
                    int16_t bsum;
                    std::memcpy(&bsum, xb + 260 + 2 * s, 2);
                    sum += sc * dot;
                    corr += sc * bsum;
                }
                uint16_t dh;
                float dx;
                std::memcpy(&dh, blk + 208, 2);
                std::memcpy(&dx, xb, 4);
                acc = acc + (fp16_to_fp32(dh) * dx) * float(sum - 32 * corr);
            }
            y[j * ldy + r] = acc;
        }
    }
}

}  // namespace

void fill_q6_k_q8_k_generic(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, quantize_q8_k, quantize_q8_k_generic);
    TRIBIT_SET_KERNEL(t, matmul_q6_k_q8_k, matmul_q6_k_q8_k_generic);
}

}  // namespace tribit
