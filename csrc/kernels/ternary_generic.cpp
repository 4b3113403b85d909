// Scalar reference kernels: always compiled, the twin every SIMD variant is
// tested against. Written for clarity; the compiler may vectorise them.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels.h"

namespace tribit {

// ---- f16 conversions (exact, no F16C needed) --------------------------------
float fp16_to_fp32(uint16_t h) {
    uint32_t sign = uint32_t(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else {  // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            u = sign | (exp << 23) | ((mant & 0x3FF) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7F800000 | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t fp32_to_fp16(float f) {
    // round to nearest even, like F16C's default mode
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = int32_t((x >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = x & 0x7FFFFF;
    if (((x >> 23) & 0xFF) == 0xFF) return uint16_t(sign | 0x7C00 | (mant ? 0x200 : 0));
    if (exp >= 31) return uint16_t(sign | 0x7C00);
    if (exp <= 0) {
        if (exp < -10) return uint16_t(sign);
        mant |= 0x800000;
        int shift = 14 - exp;
        uint32_t half = 1u << (shift - 1), rem = mant & ((1u << shift) - 1);
        uint32_t r = mant >> shift;
        if (rem > half || (rem == half && (r & 1))) r++;
        return uint16_t(sign | r);
    }
    uint32_t r = (uint32_t(exp) << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return uint16_t(sign | r);
}

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

// ---- packing ----------------------------------------------------------------
TernaryMatrix pack_ternary(const int8_t* t, int64_t m, int64_t k, float gamma) {
    TernaryMatrix w;
    w.m = m;
    w.k = k;
    w.k_pad = ternary_k_pad(k);
    w.row_bytes = w.k_pad / 4;
    w.gamma = gamma;
    size_t bytes = size_t(m * w.row_bytes) + 64;
    uint8_t* raw = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64));
    if (!raw) throw std::bad_alloc();
    w.storage = std::shared_ptr<uint8_t>(raw, [](uint8_t* p) { std::free(p); });
    w.data = raw;
    for (int64_t r = 0; r < m; r++) {
        uint8_t* row = w.data + r * w.row_bytes;
        std::memset(row, 0x55, size_t(w.row_bytes));  // code 1 (zero) everywhere
        for (int64_t i = 0; i < k; i++) {
            int64_t blk = i / kTernaryBlock, j = i % kTernaryBlock;
            int64_t p = j % 32, plane = j / 32;
            uint8_t code = uint8_t(t[r * k + i] + 1) & 3;
            uint8_t& b = row[blk * 32 + p];
            b = uint8_t((b & ~(3u << (2 * plane))) | (code << (2 * plane)));
        }
    }
    return w;
}

// ---- activations ------------------------------------------------------------
static void quantize_act_generic(int8_t* q, int64_t ldq, float* scale, int32_t* sum_q,
                                 const float* x, int64_t ldx, int64_t n, int64_t k) {
    for (int64_t j = 0; j < n; j++) {
        const float* xr = x + j * ldx;
        int8_t* qr = q + j * ldq;
        float amax = 0.0f;
        for (int64_t i = 0; i < k; i++) amax = std::fmax(amax, std::fabs(xr[i]));
        float s = 127.0f / std::fmax(amax, 1e-5f);
        int32_t sum = 0;
        for (int64_t i = 0; i < k; i++) {
            float v = std::nearbyint(xr[i] * s);  // default mode: half to even
            v = std::fmin(127.0f, std::fmax(-128.0f, v));
            qr[i] = int8_t(v);
            sum += qr[i];
        }
        for (int64_t i = k; i < ldq; i++) qr[i] = 0;
        scale[j] = s;
        sum_q[j] = sum;
    }
}

// ---- ternary matmul ---------------------------------------------------------
static void ternary_matmul_generic(float* y, int64_t ldy, const TernaryMatrix& w,
                                   const int8_t* q, int64_t ldq, const float* scale,
                                   const int32_t* sum_q, int64_t n, int64_t row_begin,
                                   int64_t row_end) {
    const int64_t nblk = w.k_pad / kTernaryBlock;
    for (int64_t j = 0; j < n; j++) {
        const int8_t* qj = q + j * ldq;
        const float post = w.gamma / scale[j];
        for (int64_t r = row_begin; r < row_end; r++) {
            const uint8_t* row = w.data + r * w.row_bytes;
            int32_t acc = 0;  // sum of code * q; the +1 offset is removed with sum_q
            for (int64_t b = 0; b < nblk; b++) {
                const uint8_t* wb = row + b * 32;
                const int8_t* qb = qj + b * kTernaryBlock;
                for (int p = 0; p < 32; p++) {
                    uint8_t v = wb[p];
                    acc += int32_t(v & 3) * qb[p] + int32_t((v >> 2) & 3) * qb[32 + p] +
                           int32_t((v >> 4) & 3) * qb[64 + p] + int32_t(v >> 6) * qb[96 + p];
                }
            }
            y[j * ldy + r] = float(acc - sum_q[j]) * post;
        }
    }
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

static void float_matmul_f32_generic(float* y, int64_t ldy, const FloatMatrix& w,
                                     const float* x, int64_t ldx, int64_t n, int64_t r0,
                                     int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, [](const uint8_t* row, int64_t i) {
        float v;
        std::memcpy(&v, row + 4 * i, 4);
        return v;
    });
}

static void float_matmul_f16_generic(float* y, int64_t ldy, const FloatMatrix& w,
                                     const float* x, int64_t ldx, int64_t n, int64_t r0,
                                     int64_t r1) {
    float_matmul_rows(y, ldy, w, x, ldx, n, r0, r1, [](const uint8_t* row, int64_t i) {
        uint16_t h;
        std::memcpy(&h, row + 2 * i, 2);
        return fp16_to_fp32(h);
    });
}

static void float_matmul_bf16_generic(float* y, int64_t ldy, const FloatMatrix& w,
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

static void float_matmul_q8_0_generic(float* y, int64_t ldy, const FloatMatrix& w,
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

static void cvt_f32_f16_generic(uint16_t* out, const float* in, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fp32_to_fp16(in[i]);
}
static inline float widen(float v) { return v; }
static inline float widen(uint16_t h) { return fp16_to_fp32(h); }

// The fixed order of dot_f32_fn (kernels.h); the products are exact in double.
template <typename B>
static double dot_generic(const double* a, const B* b, int64_t n) {
    double p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) p[j] += a[i + j] * double(widen(b[i + j]));
    double s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
    for (; i < n; i++) s += a[i] * double(widen(b[i]));
    return s;
}
template <typename X>
static void axpy_generic(double* y, double a, const X* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const double ax = a * double(widen(x[i]));
        y[i] = y[i] + ax;
    }
}
static double dot_f32_generic(const double* a, const float* b, int64_t n) { return dot_generic(a, b, n); }
static double dot_f16_generic(const double* a, const uint16_t* b, int64_t n) { return dot_generic(a, b, n); }
static void axpy_f32_generic(double* y, double a, const float* x, int64_t n) { axpy_generic(y, a, x, n); }
static void axpy_f16_generic(double* y, double a, const uint16_t* x, int64_t n) { axpy_generic(y, a, x, n); }
template <typename X>
static void wsum_rows_generic(double* y, int64_t ldy, const double* coef, int64_t ldc, int64_t rows,
                              const X* x, int64_t ldx, int64_t len, int64_t n) {
    for (int64_t g = 0; g < rows; g++)
        for (int64_t i = 0; i < n; i++) y[g * ldy + i] = 0.0;
    for (int64_t t = 0; t < len; t++)
        for (int64_t g = 0; g < rows; g++) axpy_generic(y + g * ldy, coef[g * ldc + t], x + t * ldx, n);
}
template <typename B>
static void dot_rows_generic(double* out, const double* a, int64_t lda, int64_t rows, const B* b, int64_t n) {
    for (int64_t g = 0; g < rows; g++) out[g] = dot_generic(a + g * lda, b, n);
}

void fill_table_generic(KernelTable& t) {
    t.cvt_f32_f16 = cvt_f32_f16_generic;
    t.dot_f32 = dot_f32_generic;
    t.axpy_f32 = axpy_f32_generic;
    t.dot_f16 = dot_f16_generic;
    t.axpy_f16 = axpy_f16_generic;
    t.dot_rows_f32 = dot_rows_generic<float>;
    t.dot_rows_f16 = dot_rows_generic<uint16_t>;
    t.wsum_rows_f32 = wsum_rows_generic<float>;
    t.wsum_rows_f16 = wsum_rows_generic<uint16_t>;
    t.quantize_act = quantize_act_generic;
    t.quantize_act_name = "quantize_act_i8_generic";
    t.ternary_gemv = ternary_matmul_generic;
    t.ternary_gemv_name = "ternary_gemv_i2_generic";
    t.ternary_gemm = ternary_matmul_generic;
    t.ternary_gemm_name = "ternary_gemm_i2_generic";
    t.float_matmul[int(FloatType::f32)] = float_matmul_f32_generic;
    t.float_matmul[int(FloatType::f16)] = float_matmul_f16_generic;
    t.float_matmul[int(FloatType::bf16)] = float_matmul_bf16_generic;
    t.float_matmul[int(FloatType::q8_0)] = float_matmul_q8_0_generic;
    t.float_matmul_name[0] = "matmul_f32_generic";
    t.float_matmul_name[1] = "matmul_f16_generic";
    t.float_matmul_name[2] = "matmul_bf16_generic";
    t.float_matmul_name[3] = "matmul_q8_0_generic";
    t.float_matmul[int(FloatType::q6_k)] = matmul_q6_k_generic;
    t.float_matmul_name[int(FloatType::q6_k)] = "matmul_q6_k_generic";
    t.float_row = float_row_generic;
}

}  // namespace tribit
