// The kernel interface shared by every ISA variant and by the forward pass.
//
// Rules (DESIGN.md): kernels take the output first, never allocate, never
// throw, never start threads. Parallelism is the caller's: it splits the
// output rows [row_begin, row_end) across the thread pool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tribit {

// ---------------------------------------------------------------- ISAs
enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, neon = 3 };
const char* isa_name(Isa isa);

// ------------------------------------------------------ weight storage
// Ternary weights repacked at load into the layout the chosen kernel wants.
// The layout is private to the kernel family that made it (`layout` names it);
// callers only hand the struct back to that family's kernels.
struct TernaryMatrix {
    int64_t m = 0;          // out_features (rows)
    int64_t k = 0;          // in_features (columns)
    float gamma = 1.0f;     // per-tensor weight scale (multiply convention)
    int layout = 0;         // which packing `data` holds (kernel family id)
    int64_t row_stride = 0; // bytes per packed row (or per row group; layout-defined)
    uint8_t* data = nullptr;      // 64-byte aligned, owned by `storage`
    std::vector<uint8_t> storage; // over-allocated; data points inside it
};

// Float weights for the head / embeddings. Zero-copy: `data` points into the
// mapped file (or an owned buffer); rows are contiguous, row-major (m, k).
enum class FloatType : int { f32 = 0, f16 = 1, bf16 = 2, q8_0 = 3 };
struct FloatMatrix {
    int64_t m = 0, k = 0;
    FloatType type = FloatType::f32;
    const void* data = nullptr;
    int64_t row_bytes = 0;
};

// ----------------------------------------------------------- operations
// x (n, k) float -> q (n, k) int8 codes with per-token scale s_x = 127/amax
// (amax floored at 1e-5), round half to even, and sum_q = sum of the codes.
using quantize_act_fn = void (*)(int8_t* q, float* scale, int32_t* sum_q, const float* x,
                                 int64_t n, int64_t k);

// Pack int8 ternary values t (m, k) in {-1,0,1} into `out` for this family.
using pack_ternary_fn = void (*)(TernaryMatrix& out, const int8_t* t, int64_t m, int64_t k,
                                 float gamma);

// y[j, r] (n tokens, ldy floats apart) = gamma / scale[j] * sum_i T[r, i] * q[j, i]
// for r in [row_begin, row_end). The integer sum is exact (int32). When `iacc`
// is not null the raw integer sums are written there instead (tests).
using ternary_matmul_fn = void (*)(float* y, int64_t ldy, const TernaryMatrix& w, const int8_t* q,
                                   int64_t ldq, const float* scale, const int32_t* sum_q, int64_t n,
                                   int64_t row_begin, int64_t row_end);

// y[j, r] = dot(W[r, :], x[j, :]) in float32 for r in [row_begin, row_end).
using float_matmul_fn = void (*)(float* y, int64_t ldy, const FloatMatrix& w, const float* x,
                                 int64_t ldx, int64_t n, int64_t row_begin, int64_t row_end);

// The function table, filled once per ISA.
struct KernelTable {
    Isa isa = Isa::generic;
    quantize_act_fn quantize_act = nullptr;
    pack_ternary_fn pack_ternary = nullptr;
    ternary_matmul_fn ternary_gemv = nullptr;  // n small (decode); any n must still be correct
    ternary_matmul_fn ternary_gemm = nullptr;  // n large (prefill)
    float_matmul_fn float_matmul[4] = {nullptr, nullptr, nullptr, nullptr};  // by FloatType
};

// Selected table: TRIBIT_ISA if set (throws std::runtime_error if it cannot
// run here), else the best the CPU supports. Computed once.
const KernelTable& kernels();
// A specific variant (tests/benchmarks); nullptr if not compiled or not runnable.
const KernelTable* kernels_for(Isa isa);

}  // namespace tribit
