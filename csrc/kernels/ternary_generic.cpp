// Scalar reference kernels of the ternary path: packing into the common layout
// (kernels.h), activation quantization and the ternary matmul. Always compiled, the
// twin every SIMD variant is tested against. Written for clarity; the compiler may
// vectorise them.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels.h"

namespace tribit {

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
static void quantize_act_i8_generic(int8_t* q, int64_t ldq, float* scale, int32_t* sum_q,
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
static void ternary_matmul_i2_generic(float* y, int64_t ldy, const TernaryMatrix& w,
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

void fill_ternary_generic(KernelTable& t) {
    TRIBIT_SET_KERNEL(t, quantize_act, quantize_act_i8_generic);
    // one kernel for decode and prefill
    TRIBIT_SET_KERNEL(t, ternary_gemv, ternary_matmul_i2_generic);
    TRIBIT_SET_KERNEL(t, ternary_gemm, ternary_matmul_i2_generic);
}

}  // namespace tribit
