// Scalar float kernels of the head and the embedding: f32, f16, bf16, Q8_0 and Q6_K
// rows (FloatMatrix) times float32 activations, and one row to float32; the exact
// f16 conversions every variant shares for its tails; the float types' names.
// Always compiled, the twin every SIMD variant is tested against.
#include <cstring>
#include <stdexcept>
#include <string>

#include "fp16_generic.h"
#include "kernels.h"

namespace tribit {

// ---- f16 conversions (exact, no F16C needed: fp16_generic.h) ---------------
float fp16_to_fp32(uint16_t h) { return f16_bits_to_f32(h); }
uint16_t fp32_to_fp16(float f) { return f32_to_f16_bits(f); }

int64_t float_row_bytes(FloatType type, int64_t k) {
    switch (type) {
        case FloatType::f32: return 4 * k;
        case FloatType::f16:
        case FloatType::bf16: return 2 * k;
        case FloatType::q8_0: return k % 32 ? -1 : k / 32 * 34;
        case FloatType::q6_k: return k % kQ6KBlock ? -1 : k / kQ6KBlock * kQ6KBlockBytes;
    }
    return -1;
}

// ---- names ------------------------------------------------------------------
namespace {
constexpr const char* kFloatTypeNames[kNumFloatTypes] = {"f32", "f16", "bf16", "q8_0", "q6_k"};
}  // namespace

const char* float_type_name(FloatType type) {
    const int i = int(type);
    return i >= 0 && i < kNumFloatTypes ? kFloatTypeNames[i] : "?";
}

FloatType parse_float_type(const std::string& name) {
    std::string known;
    for (int i = 0; i < kNumFloatTypes; i++) {
        if (name == kFloatTypeNames[i]) return FloatType(i);
        known += (i ? ", " : "") + std::string(kFloatTypeNames[i]);
    }
    throw std::invalid_argument("unknown float type '" + name + "' (" + known + ")");
}

// ---- float matmul -----------------------------------------------------------
template <typename Load>
static void float_matmul_rows(float* y, int64_t ldy, const FloatMatrix& w, const float* x,
                              int64_t ldx, int64_t n, int64_t r0, int64_t r1, Load load) {
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t* row = w.data + r * w.row_bytes;
        for (int64_t j = 0; j < n; j++) {
            const float* xj = x + j * ldx;
            float acc = 0.0f;
            for (int64_t i = 0; i < w.k; i++) acc += load(row, i) * xj[i];
            y[j * ldy + r] = acc;
        }
    }
}

static void matmul_f32_generic(float* y, int64_t ldy, const FloatMatrix& w,
                               const float* x, int64_t ldx, int64_t n, int64_t r0,
                               int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, [](const uint8_t* row, int64_t i) {
        float v;
        std::memcpy(&v, row + 4 * i, 4);
        return v;
    });
}

static void matmul_f16_generic(float* y, int64_t ldy, const FloatMatrix& w,
                               const float* x, int64_t ldx, int64_t n, int64_t r0,
                               int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, [](const uint8_t* row, int64_t i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        return fp16_to_fp32(h);
    });
}

static void matmul_bf16_generic(float* y, int64_t ldy, const FloatMatrix& w,
                                const float* x, int64_t ldx, int64_t n, int64_t r0,
                                int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, [](const uint8_t* row, int64_t i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        return bf16_to_fp32(h);
    });
}

static float q8_0_value(const uint8_t* row, int64_t i) {
    const uint8_t* blk = row + (i / 32) * 34;
    uint16_t d;
    std::memcpy(&d, blk, 2);
    return fp16_to_fp32(d) * float(int8_t(blk[2 + i % 32]));
}

static void matmul_q8_0_generic(float* y, int64_t ldy, const FloatMatrix& w,
                                const float* x, int64_t ldx, int64_t n, int64_t r0,
                                int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, q8_0_value);
}

// Q6_K value i of a row: (d * scale) * (q - 32) in float32, the order of ggml's
// dequantize_row_q6_K and of tribit.quant.dequantize_q6_k (so the embedding
// lookup is bit-identical to them). Within a 128-value half, value
// j = 32 * p + l has its low nibble in ql[l + 32 * (p & 1)] (high nibble for
// p >= 2) and its two high bits in qh[l] bits 2p, 2p + 1.
static float q6_k_value(const uint8_t* row, int64_t i) {
    const uint8_t* blk = row + (i / kQ6KBlock) * kQ6KBlockBytes;
    const int j = int(i % kQ6KBlock), half = j / 128, p = (j % 128) / 32, l = j % 32;
    const uint8_t lo = blk[half * 64 + l + 32 * (p & 1)];
    const int q = ((p >= 2 ? lo >> 4 : lo & 0xF) | (((blk[128 + half * 32 + l] >> (2 * p)) & 3) << 4)) - 32;
    uint16_t dh;
    std::memcpy(&dh, blk + 208, 2);
    const float ds = fp16_to_fp32(dh) * float(int8_t(blk[192 + j / 16]));
    return ds * float(q);
}

// The q6_k head's defining arithmetic: every weight dequantized as above, then
// the float32 dot with x summed in index order (float_matmul_rows).
static void matmul_q6_k_generic(float* y, int64_t ldy, const FloatMatrix& w, const float* x,
                                int64_t ldx, int64_t n, int64_t r0, int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, q6_k_value);
}

static void float_row_generic(float* out, const FloatMatrix& w, int64_t r) {
    const uint8_t* row = w.data + r * w.row_bytes;
    for (int64_t i = 0; i < w.k; i++) {
        switch (w.type) {
            case FloatType::f32: std::memcpy(&out[i], row + 4 * i, 4); break;
            case FloatType::f16: {
                uint16_t h;
                std::memcpy(&h, row + 2 * i, 2);
                out[i] = fp16_to_fp32(h);
                break;
            }
            case FloatType::bf16: {
                uint16_t h;
                std::memcpy(&h, row + 2 * i, 2);
                out[i] = bf16_to_fp32(h);
                break;
            }
            case FloatType::q8_0: out[i] = q8_0_value(row, i); break;
            case FloatType::q6_k: out[i] = q6_k_value(row, i); break;
        }
    }
}

void fill_float_generic(KernelTable& t) {
    TRIBIT_SET_FLOAT_KERNEL(t, f32, matmul_f32_generic);
    TRIBIT_SET_FLOAT_KERNEL(t, f16, matmul_f16_generic);
    TRIBIT_SET_FLOAT_KERNEL(t, bf16, matmul_bf16_generic);
    TRIBIT_SET_FLOAT_KERNEL(t, q8_0, matmul_q8_0_generic);
    TRIBIT_SET_FLOAT_KERNEL(t, q6_k, matmul_q6_k_generic);
    t.float_row = float_row_generic;
}

}  // namespace tribit
