// Q6_K quantization at load (tribit.load(head_type="q6_k")): llama.cpp's
// quantize_row_q6_K_ref, re-implemented from its description. The numpy spec
// (tribit/quant/kquants.py) documents the steps; this is the same float32
// arithmetic in the same order (no FMA contraction: -ffp-contract=off), so the
// bytes are identical, and tests check that.
#include <cmath>
#include <cstring>

#include "kernels.h"

namespace tribit {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

// ggml's nearest_int: adding 1.5 * 2^23 rounds to an integer, half to even, in
// one float32 addition (the baseline ISA has no round instruction; libm's
// nearbyint is a call). Values here stay far below 2^22; others take nearbyint.
inline int nearest_int(float v) {
    if (!(std::fabs(v) < 4194304.0f)) return int(std::nearbyint(v));
    const float t = v + 12582912.0f;
    int32_t i;
    std::memcpy(&i, &t, 4);
    return (i & 0x007FFFFF) - 0x00400000;
}
inline int clamp(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// make_qx_quants(n = 16, nmax = 32, rmse_type = 1, no importance weights):
// L[i] in 0..63; returns the sub-block scale.
float make_qx_quants_q6(const float* x, int8_t* L) {
    float max = 0, amax = 0;
    for (int i = 0; i < 16; i++) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    if (amax < kGroupMaxEps) {
        for (int i = 0; i < 16; i++) L[i] = 0;
        return 0.0f;
    }
    float iscale = -32.0f / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < 16; i++) {
        const int l = clamp(nearest_int(iscale * x[i]), -32, 31);
        L[i] = int8_t(l + 32);
        const float w = x[i] * x[i];
        sumlx += w * x[i] * float(l);
        suml2 += w * float(l) * float(l);
    }
    float scale = suml2 != 0.0f ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(32.0f + 0.1f * float(is)) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < 16; i++) {
            const int l = clamp(nearest_int(iscale * x[i]), -32, 31);
            const float w = x[i] * x[i];
            sumlx += w * x[i] * float(l);
            suml2 += w * float(l) * float(l);
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < 16; i++) L[i] = int8_t(clamp(nearest_int(iscale * x[i]), -32, 31) + 32);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

void quantize_block_q6_k(uint8_t* y, const float* x) {
    int8_t L[256];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ib++) {
        const float scale = make_qx_quants_q6(x + 16 * ib, L + 16 * ib);
        scales[ib] = scale;
        const float abs_scale = std::fabs(scale);
        if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scale; }
    }
    if (max_abs_scale < kGroupMaxEps) {
        std::memset(y, 0, size_t(kQ6KBlockBytes));
        return;
    }
    uint8_t* ql = y;
    uint8_t* qh = y + 128;
    int8_t* sc = reinterpret_cast<int8_t*>(y + 192);
    const float iscale = -128.0f / max_scale;
    const uint16_t dh = fp32_to_fp16(1.0f / iscale);
    std::memcpy(y + 208, &dh, 2);
    for (int ib = 0; ib < 16; ib++) {
        const int v = nearest_int(iscale * scales[ib]);
        sc[ib] = int8_t(v < 127 ? v : 127);
    }
    const float dd = fp16_to_fp32(dh);
    for (int j = 0; j < 16; j++) {
        const float d = dd * float(sc[j]);
        if (d == 0.0f) continue;
        for (int ii = 0; ii < 16; ii++)
            L[16 * j + ii] = int8_t(clamp(nearest_int(x[16 * j + ii] / d), -32, 31) + 32);
    }
    for (int j = 0; j < 256; j += 128) {
        for (int l = 0; l < 32; l++) {
            const uint8_t q1 = uint8_t(L[j + l]), q2 = uint8_t(L[j + l + 32]);
            const uint8_t q3 = uint8_t(L[j + l + 64]), q4 = uint8_t(L[j + l + 96]);
            ql[l] = uint8_t((q1 & 0xF) | ((q3 & 0xF) << 4));
            ql[l + 32] = uint8_t((q2 & 0xF) | ((q4 & 0xF) << 4));
            qh[l] = uint8_t((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

}  // namespace

void quantize_q6_k_rows(uint8_t* out, const float* x, int64_t k, int64_t row_begin, int64_t row_end) {
    const int64_t nb = k / kQ6KBlock, rb = nb * kQ6KBlockBytes;
    for (int64_t r = row_begin; r < row_end; r++)
        for (int64_t b = 0; b < nb; b++)
            quantize_block_q6_k(out + r * rb + b * kQ6KBlockBytes, x + r * k + b * kQ6KBlock);
}

}  // namespace tribit
