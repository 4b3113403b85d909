// Scalar reference kernels of the group-scaled low-bit types Q2_0 and Q1_0 (kernels.h):
// packing into the common interleaved layout, Q8_0 activation quantization (llama.cpp's
// x86 rule), the llama.cpp-compatible matmul (mode a), the float-activation matmul (mode
// b) and the embedding row. Always compiled; the twin the SIMD variants are tested against.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "fp16_generic.h"
#include "kernels.h"

namespace tribit {

namespace {
constexpr const char* kGroupTypeNames[kNumGroupTypes] = {"q2_0", "q1_0"};
constexpr int64_t kGgmlBlockBytes = 18;  // both types: f16 d + 16 bytes

// Where the pieces of weight block b of row group g live.
inline const uint8_t* block_at(const GroupMatrix& w, int64_t g, int64_t b) {
    return w.data + g * w.group_bytes + b * kGroupBlockBytes;
}

// Code (Q2_0: 0..3) or bit (Q1_0: 0..1) of row rr (0..7 in its group), weight i of block b.
inline int code_at(const GroupMatrix& w, const uint8_t* blk, int64_t rr, int64_t i) {
    const int64_t h = i / 32, s = (i % 32) / 4, wi = i % 4;
    if (w.type == GroupType::q2_0) {
        const uint8_t* st = blk + 16 + (h * 8 + s) * 8;
        const int64_t L = rr / 2, byte = (rr % 2) * 4 + wi;
        return (st[byte] >> (2 * L)) & 3;
    }
    const uint8_t* qs = blk + 16 + rr * 16;
    return (qs[i / 8] >> (i % 8)) & 1;
}

inline float scale_at(const uint8_t* blk, int64_t rr) {
    uint16_t h;
    std::memcpy(&h, blk + 2 * rr, 2);
    return f16_bits_to_f32(h);
}

inline int value_of(GroupType type, int code) { return type == GroupType::q2_0 ? code - 1 : 2 * code - 1; }
}  // namespace

const char* group_type_name(GroupType type) {
    const int i = int(type);
    return i >= 0 && i < kNumGroupTypes ? kGroupTypeNames[i] : "?";
}

GroupType parse_group_type(const std::string& name) {
    for (int i = 0; i < kNumGroupTypes; i++)
        if (name == kGroupTypeNames[i]) return GroupType(i);
    throw std::invalid_argument("unknown group type '" + name + "' (q2_0, q1_0)");
}

int64_t group_block(GroupType type) { return type == GroupType::q2_0 ? 64 : 128; }

GroupMatrix pack_group(const uint8_t* raw, GroupType type, int64_t m, int64_t k) {
    GroupMatrix w;
    w.type = type;
    w.block = group_block(type);
    if (m <= 0 || k <= 0 || k % w.block)
        throw std::invalid_argument(std::string(group_type_name(type)) + " needs rows of a multiple of " +
                                    std::to_string(w.block) + " values, got k = " + std::to_string(k));
    w.m = m;
    w.k = k;
    w.m_pad = (m + kGroupRows - 1) / kGroupRows * kGroupRows;
    const int64_t nb = k / w.block;
    w.group_bytes = nb * kGroupBlockBytes;
    const size_t bytes = size_t(w.m_pad / kGroupRows * w.group_bytes);
    uint8_t* mem = static_cast<uint8_t*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64));
    if (!mem) throw std::bad_alloc();
    w.storage = std::shared_ptr<uint8_t>(mem, [](uint8_t* p) { std::free(p); });
    w.data = mem;
    std::memset(mem, 0, bytes);
    const int64_t row_bytes = nb * kGgmlBlockBytes;
    for (int64_t g = 0; g < w.m_pad / kGroupRows; g++) {
        for (int64_t b = 0; b < nb; b++) {
            uint8_t* blk = w.data + g * w.group_bytes + b * kGroupBlockBytes;
            for (int64_t rr = 0; rr < kGroupRows; rr++) {
                const int64_t r = g * kGroupRows + rr;
                const uint8_t* src = r < m ? raw + r * row_bytes + b * kGgmlBlockBytes : nullptr;
                if (src) std::memcpy(blk + 2 * rr, src, 2);  // d (padding rows: 0)
                for (int64_t i = 0; i < w.block; i++) {
                    int code;
                    if (type == GroupType::q2_0)
                        code = src ? (src[2 + i / 4] >> (2 * (i % 4))) & 3 : 1;
                    else
                        code = src ? (src[2 + i / 8] >> (i % 8)) & 1 : 0;
                    const int64_t st = i / 4, wi = i % 4;
                    if (type == GroupType::q2_0) {
                        uint8_t* p = blk + 16 + st * 8;
                        p[(rr % 2) * 4 + wi] |= uint8_t(code << (2 * (rr / 2)));
                    } else {
                        blk[16 + rr * 16 + i / 8] |= uint8_t(code << (i % 8));
                    }
                }
            }
        }
    }
    return w;
}

namespace {

// ---- Q8_0 activations (llama.cpp's x86 quantize_row_q8_0) --------------------
void quantize_q8_0_generic(int8_t* q, float* d, int32_t* bsum, const float* x, int64_t ldx,
                           int64_t n, int64_t k) {
    const int64_t nb = k / 32;
    for (int64_t j = 0; j < n; j++) {
        const float* xr = x + j * ldx;
        for (int64_t b = 0; b < nb; b++) {
            const float* xb = xr + b * 32;
            float amax = 0.0f;
            for (int i = 0; i < 32; i++) amax = std::fmax(amax, std::fabs(xb[i]));
            d[j * nb + b] = f16_bits_to_f32(f32_to_f16_bits(amax / 127.0f));
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            int32_t sum = 0;
            int8_t* qb = q + j * k + b * 32;
            for (int i = 0; i < 32; i++) {
                float v = std::nearbyint(xb[i] * id);  // half to even (default mode)
                v = std::fmin(127.0f, std::fmax(-128.0f, v));
                qb[i] = int8_t(v);
                sum += qb[i];
            }
            bsum[j * nb + b] = sum;
        }
    }
}

// ---- mode (a): the llama.cpp-compatible matmul --------------------------------
// Q1_0 in ggml's AVX2 order (kernels.h): lane s of 8 sums weights 4s..4s+3 of every
// 32-block; da * S is exact, so each step of t is one rounded sum; acc by FMA; the lanes
// summed by halves at the end.
void q1_0_matmul_generic(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                         int64_t n, int64_t row_begin, int64_t row_end) {
    const int64_t nb = w.k / w.block, na = w.k / 32;
    for (int64_t r = row_begin; r < row_end; r++) {
        const int64_t g = r / kGroupRows, rr = r % kGroupRows;
        for (int64_t j = 0; j < n; j++) {
            const int8_t* qj = q + j * w.k;
            float acc[8] = {};
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t* blk = block_at(w, g, b);
                float t[8];
                for (int64_t h = 0; h < 4; h++) {
                    const float da = d[j * na + b * 4 + h];
                    for (int64_t s = 0; s < 8; s++) {
                        int32_t sum = 0;
                        for (int64_t wi = 0; wi < 4; wi++) {
                            const int64_t i = h * 32 + s * 4 + wi;
                            sum += value_of(GroupType::q1_0, code_at(w, blk, rr, i)) * qj[b * 128 + i];
                        }
                        const float prod = da * float(sum);
                        t[s] = h == 0 ? prod : t[s] + prod;
                    }
                }
                const float dw = scale_at(blk, rr);
                for (int64_t s = 0; s < 8; s++) acc[s] = std::fma(dw, t[s], acc[s]);
            }
            for (int64_t s = 0; s < 4; s++) acc[s] = acc[s + 4] + acc[s];
            y[j * ldy + r] = (acc[0] + acc[2]) + (acc[1] + acc[3]);
        }
    }
}

// Q2_0 in ggml's (generic C) order, kernels.h.
void q2_0_matmul_generic(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                          const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    const int64_t nb = w.k / w.block, per = w.block / 32, na = w.k / 32;
    for (int64_t r = row_begin; r < row_end; r++) {
        const int64_t g = r / kGroupRows, rr = r % kGroupRows;
        for (int64_t j = 0; j < n; j++) {
            const int8_t* qj = q + j * w.k;
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t* blk = block_at(w, g, b);
                float t = 0.0f;
                for (int64_t h = 0; h < per; h++) {
                    int32_t s = 0;  // sum of code * q; the offset is removed with bsum
                    for (int64_t i = 0; i < 32; i++)
                        s += code_at(w, blk, rr, h * 32 + i) * qj[b * w.block + h * 32 + i];
                    const int64_t a = j * na + b * per + h;
                    s -= bsum[a];
                    t = t + d[a] * float(s);
                }
                acc = acc + scale_at(blk, rr) * t;
            }
            y[j * ldy + r] = acc;
        }
    }
}

// ---- mode (b): dequantized weights x float activations, in double --------------
void matmul_group_f32_generic(float* y, int64_t ldy, const GroupMatrix& w, const float* x, int64_t ldx,
                              int64_t n, int64_t row_begin, int64_t row_end) {
    const int64_t nb = w.k / w.block;
    for (int64_t r = row_begin; r < row_end; r++) {
        const int64_t g = r / kGroupRows, rr = r % kGroupRows;
        for (int64_t j = 0; j < n; j++) {
            const float* xj = x + j * ldx;
            double acc = 0.0;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t* blk = block_at(w, g, b);
                const float dw = scale_at(blk, rr);
                for (int64_t i = 0; i < w.block; i++) {
                    const float v = float(value_of(w.type, code_at(w, blk, rr, i))) * dw;
                    acc += double(v) * double(xj[b * w.block + i]);
                }
            }
            y[j * ldy + r] = float(acc);
        }
    }
}

void group_row_generic(float* out, const GroupMatrix& w, int64_t row) {
    const int64_t nb = w.k / w.block, g = row / kGroupRows, rr = row % kGroupRows;
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t* blk = block_at(w, g, b);
        const float dw = scale_at(blk, rr);
        for (int64_t i = 0; i < w.block; i++)
            out[b * w.block + i] = float(value_of(w.type, code_at(w, blk, rr, i))) * dw;
    }
}

void matmul_q2_0_q8_0_generic(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                              const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    q2_0_matmul_generic(y, ldy, w, q, d, bsum, n, row_begin, row_end);
}

void matmul_q1_0_q8_0_generic(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q, const float* d,
                              const int32_t* bsum, int64_t n, int64_t row_begin, int64_t row_end) {
    q1_0_matmul_generic(y, ldy, w, q, d, n, row_begin, row_end);
}

}  // namespace

void fill_group_generic(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, quantize_q8_0, quantize_q8_0_generic);
    TRIBIT_SET_GROUP_KERNEL(t, q2_0, matmul_q2_0_q8_0_generic);
    TRIBIT_SET_GROUP_KERNEL(t, q1_0, matmul_q1_0_q8_0_generic);
    TRIBIT_SET_KERNEL(t, group_matmul_f32, matmul_group_f32_generic);
    t.group_row = group_row_generic;
}

}  // namespace tribit
