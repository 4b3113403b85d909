// The kernel interface shared by every ISA variant and by the forward pass.
//
// Rules (docs/DESIGN.md): kernels take the output first, never allocate, never
// throw, never start threads. Parallelism is the caller's: it splits the
// output rows [row_begin, row_end) across the thread pool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace tribit {

// ---------------------------------------------------------------- ISAs
enum class Isa : int { generic = 0, avx2 = 1, avx512 = 2, neon = 3 };
constexpr int kNumIsas = 4;
// The one spelling of each ISA's name ("generic", "avx2", "avx512", "neon"), and
// back: std::invalid_argument naming the known ones if `name` is none of them.
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);
std::string isa_names();  // "generic, avx2, avx512, neon"

// ------------------------------------------------------ weight storage
// Ternary weights repacked once at load. One layout serves every ISA (so a
// matrix packed on one machine is valid on any, and ISAs can be compared on
// identical inputs):
//   k_pad = k rounded up to 128; each row is k_pad/4 bytes, a sequence of
//   32-byte blocks of 128 weights; byte p of a block holds the codes (t + 1)
//   of weights p, 32+p, 64+p, 96+p in bits 0-1, 2-3, 4-5, 6-7.
// Padding weights hold code 1 (zero). Activations fed to the matmul must be
// padded with zeros up to k_pad.
constexpr int64_t kTernaryBlock = 128;
inline int64_t ternary_k_pad(int64_t k) { return (k + kTernaryBlock - 1) / kTernaryBlock * kTernaryBlock; }

struct TernaryMatrix {
    int64_t m = 0;            // out_features (rows)
    int64_t k = 0;            // in_features (columns)
    int64_t k_pad = 0;        // k rounded up to kTernaryBlock
    int64_t row_bytes = 0;    // k_pad / 4
    float gamma = 1.0f;       // per-tensor weight scale (multiply convention)
    uint8_t* data = nullptr;  // 64-byte aligned, m * row_bytes bytes
    std::shared_ptr<uint8_t> storage;
};

// Float weights for the head / embeddings, row-major (m, k). Zero-copy: `data`
// points into the mapped file or a buffer its owner keeps alive.
// q6_k: ggml's Q6_K (type 14), 256-value super-blocks of 210 bytes (docs/FORMATS.md 3.9,
// tribit/quant/kquants.py): value = (d * scales[i / 16]) * (q6 - 32).
enum class FloatType : int { f32 = 0, f16 = 1, bf16 = 2, q8_0 = 3, q6_k = 4 };
constexpr int kNumFloatTypes = 5;
constexpr int64_t kQ6KBlock = 256, kQ6KBlockBytes = 210;
struct FloatMatrix {
    int64_t m = 0, k = 0;
    FloatType type = FloatType::f32;
    const uint8_t* data = nullptr;
    int64_t row_bytes = 0;
};
int64_t float_row_bytes(FloatType type, int64_t k);  // -1 if k is invalid for the type
// The one spelling of each float type's name ("f32", "f16", "bf16", "q8_0", "q6_k"),
// and back: std::invalid_argument naming the known ones if `name` is none of them.
const char* float_type_name(FloatType type);
FloatType parse_float_type(const std::string& name);

// ------------------------------------- group-scaled low-bit weights (Q2_0, Q1_0)
// ggml's Q2_0 (type 42: 64 weights, f16 d, codes 0..3 -> (c - 1) * d) and Q1_0 (type 41:
// 128 weights, f16 d, bit ? d : -d), docs/FORMATS.md 3.11, tribit/quant/lowbit.py.
// Repacked once at load (pack_group) into one layout for every ISA, rows in groups of
// kGroupRows. Q2_0 interleaves them so that the kernels' int32 lanes are rows (each lane
// sums one row's 32-weight activation block by itself; no horizontal sums); Q1_0 keeps each
// row's bits whole, its kernels' lanes being ggml's 8 steps (mode a below):
//   m_pad = m rounded up to 8; per row group (8 rows) and weight block b, 144 bytes:
//   - the 8 rows' f16 d (16 bytes, row order), then
//   - Q2_0: per 32-weight activation block h (2) and step s = 0..7 (weights 32h + 4s ..
//     32h + 4s + 3) 8 bytes; byte i at bits 2L..2L+1 holds the code of row 2L + i/4, weight
//     32h + 4s + i%4 (a 64-bit broadcast shifted by 0, 2, 4, 6 per 64-bit lane and masked
//     with 3 gives 32 bytes: row g's 4 codes in bytes 4g..4g+3);
//   - Q1_0: per row g, ggml's 16 bytes qs (bit i % 8 of byte i / 8 = weight i).
// Padding rows hold code 1 (value 0) / bit 0 with d = 0. The same 144 bytes per 8 x block
// as ggml's 8 x 18.
enum class GroupType : int { q2_0 = 0, q1_0 = 1 };
constexpr int kNumGroupTypes = 2;
constexpr int64_t kGroupRows = 8;
constexpr int64_t kGroupBlockBytes = 144;  // per row group and weight block
struct GroupMatrix {
    int64_t m = 0, k = 0, m_pad = 0;
    GroupType type = GroupType::q2_0;
    int64_t block = 64;        // weights per scale: 64 (Q2_0) or 128 (Q1_0)
    int64_t group_bytes = 0;   // bytes of one row group: k / block * 144
    uint8_t* data = nullptr;   // 64-byte aligned
    std::shared_ptr<uint8_t> storage;
    bool empty() const { return data == nullptr; }
};
// "q2_0" / "q1_0"; std::invalid_argument otherwise
const char* group_type_name(GroupType type);
GroupType parse_group_type(const std::string& name);
int64_t group_block(GroupType type);  // 64 or 128
// ggml rows (m rows of k / block * 18 bytes) into the common layout; invalid_argument if k
// is not a multiple of the block.
GroupMatrix pack_group(const uint8_t* raw, GroupType type, int64_t m, int64_t k);

// ----------------------------------------------------------- operations
// x (n, k) float, rows ldx apart -> q (n, ldq) int8 codes with per-token scale
// s_x = 127 / max(amax, 1e-5), round half to even, and sum_q = sum of codes.
// q[j, k .. ldq) is set to zero (the padding the ternary matmul expects).
using quantize_act_fn = void (*)(int8_t* q, int64_t ldq, float* scale, int32_t* sum_q,
                                 const float* x, int64_t ldx, int64_t n, int64_t k);

// y[j * ldy + r] = float(S[j, r]) * (gamma / scale[j]) for r in [row_begin, row_end),
// with S[j, r] = sum_i T[r, i] * q[j, i] exact in int32.
using ternary_matmul_fn = void (*)(float* y, int64_t ldy, const TernaryMatrix& w,
                                   const int8_t* q, int64_t ldq, const float* scale,
                                   const int32_t* sum_q, int64_t n, int64_t row_begin,
                                   int64_t row_end);

// y[j * ldy + r] = dot(W[r, :], x[j, :]) in float32 for r in [row_begin, row_end).
using float_matmul_fn = void (*)(float* y, int64_t ldy, const FloatMatrix& w, const float* x,
                                 int64_t ldx, int64_t n, int64_t row_begin, int64_t row_end);

// The q6_k head's integer path (llama.cpp's ggml_vec_dot_q6_K_q8_K arithmetic,
// docs/KERNELS.md "The Q6_K head's integer path"). Activations as q8_K (ggml's
// block_q8_K): per token k / 256 blocks of 292 bytes, float32 d, int8 qs[256], int16 bsums[16] (sums of
// 16 codes), with x ~ d * qs; a token's blocks start ldq bytes apart.
constexpr int64_t kQ8KBlockBytes = 292;
// x (n, k) float, k % 256 == 0 -> q8_K rows: per block, max = the first value of
// largest |x|, iscale = -127 / max, qs = min(127, round-half-even(iscale * x)),
// d = 1 / iscale (ggml's quantize_row_q8_K_ref; an all-zero block: d = 0, codes 0).
using quantize_q8_k_fn = void (*)(uint8_t* q, int64_t ldq, const float* x, int64_t ldx,
                                  int64_t n, int64_t k);
// y[j * ldy + r] for r in [row_begin, row_end), W Q6_K (m, k), q the q8_K rows:
// per super-block b the int32 S_b = sum_s scale_s * sum_{i in s} q6_i * qs_i
// - 32 * sum_s scale_s * bsums_s (q6_i in 0..63; exact), then
// acc = acc + (d_w(b) * d_x(b)) * float(S_b) in float32 for b = 0, 1, ... in order
// (two roundings, no FMA), acc starting at +0: the same bits on every ISA and for a
// token alone or in a batch.
using q6_k_q8_k_matmul_fn = void (*)(float* y, int64_t ldy, const FloatMatrix& w,
                                     const uint8_t* q, int64_t ldq, int64_t n,
                                     int64_t row_begin, int64_t row_end);

// One row of a float matrix to float32 (embedding lookup).
using float_row_fn = void (*)(float* out, const FloatMatrix& w, int64_t row);

// The two arithmetic modes of a group-scaled matrix (docs/FORMATS.md 3.11):
// (a) llama.cpp-compatible: x (n, k) rows ldx apart, k % 32 == 0, quantized to Q8_0 blocks
// as llama.cpp's x86 quantize_row_q8_0 does: per 32 values d = f16(amax / 127) (given back
// as the float it rounds to), id = 127 / amax (0 if amax == 0), q = rint(x * id) (half to
// even) saturated to int8; bsum = sum of the block's q. q is (n, k), d and bsum (n, k / 32).
using quantize_q8_0_fn = void (*)(int8_t* q, float* d, int32_t* bsum, const float* x,
                                  int64_t ldx, int64_t n, int64_t k);
// y[j * ldy + r] for r in [row_begin, row_end), in the order of ggml's x86 dot products.
// Q2_0 (ggml_vec_dot_q2_0_q8_0, generic C): per weight block b the exact sums S_h of its 2
// activation blocks, t = 0 + da_0 * S_0 + da_1 * S_1 left to right, then acc = acc + dw_b * t
// from acc = 0, each product rounded before its sum. Q1_0 (ggml_vec_dot_q1_0_q8_0, AVX2): 8
// lanes, lane s for weights 4s..4s+3 of every activation block: S_hs exact, t_s = da_0 *
// S_0s + da_1 * S_1s + ... (each sum rounded), acc_s = fma(dw_b, t_s, acc_s), at the end
// ((acc_0 + acc_4) + (acc_2 + acc_6)) + ((acc_1 + acc_5) + (acc_3 + acc_7)). da * S is exact.
using group_matmul_fn = void (*)(float* y, int64_t ldy, const GroupMatrix& w, const int8_t* q,
                                 const float* d, const int32_t* bsum, int64_t n,
                                 int64_t row_begin, int64_t row_end);
// (b) float-activation reference: y = sum_i double(W[r, i]) * double(x[j, i]) in index
// order, rounded to float32 once.
using group_matmul_f32_fn = void (*)(float* y, int64_t ldy, const GroupMatrix& w, const float* x,
                                     int64_t ldx, int64_t n, int64_t row_begin, int64_t row_end);
// One dequantized row (embedding lookup): exactly ggml's dequantize_row_q2_0 / _q1_0.
using group_row_fn = void (*)(float* out, const GroupMatrix& w, int64_t row);

// Vector helpers for attention and the KV cache. Attention runs in double and is
// rounded to float32 once, at its output: the products of two floats are exact
// in double and the sums' order changes them by double ulps only, so every ISA
// (and PyTorch's float64 attention, tribit.train) rounds to the same float32
// outputs except in cases ~1e-8 rare, where float32 sums would differ in the
// last bits on every row.
using cvt_f32_f16_fn = void (*)(uint16_t* out, const float* in, int64_t n);
// sum_i a[i] * double(b[i]) in one fixed order for every ISA (a: a float32 query
// widened once, so every product is exact): eight
// partial sums p_j over elements i = j (mod 8) of the whole 8-blocks, then
// ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)), then the tail in order.
using dot_f32_fn = double (*)(const double* a, const float* b, int64_t n);
// y[i] = y[i] + a * double(x[i]), the product rounded before the sum (no FMA).
using axpy_f32_fn = void (*)(double* y, double a, const float* x, int64_t n);
// The same two over an f16 cache row, widened as it is loaded: the operations
// and their order are those of dot_f32 / axpy_f32 on the converted row, so the
// results are identical, without writing and re-reading a converted copy.
using dot_f16_fn = double (*)(const double* a, const uint16_t* b, int64_t n);
using axpy_f16_fn = void (*)(double* y, double a, const uint16_t* x, int64_t n);
// The same for the rows of a GQA group against `len` cache rows: out[g * ldo + t] =
// dot(a + g * lda, b + t * ldb, n) for g < rows and t < len, each operations and order
// exactly those of dot above (so the results are identical), each cache row loaded and
// widened once for all query rows, and the (g, t) sums independent chains (one dot
// alone is latency-bound; a GQA group of 2 was too).
using dot_rows_f32_fn = void (*)(double* out, int64_t ldo, const double* a, int64_t lda, int64_t rows,
                                 const float* b, int64_t ldb, int64_t len, int64_t n);
using dot_rows_f16_fn = void (*)(double* out, int64_t ldo, const double* a, int64_t lda, int64_t rows,
                                 const uint16_t* b, int64_t ldb, int64_t len, int64_t n);
// Softmax's exponentials: sc[t] = exp(sc[t] - mx) for t < len (softmax_exp.h: one
// polynomial for every ISA, the same bits), returning their sum in the order that file
// fixes (eight partial sums, then the tail).
using softmax_exp_fn = double (*)(double* sc, int64_t len, double mx);
// Attention's weighted sum of values for a GQA group: y[g * ldy + i] (g < rows,
// i < n) = zero, then + coef[g * ldc + t] * x[t * ldx + i] for t = 0 .. len-1 in
// order, each product rounded before its sum: exactly `len` axpy calls per row
// on zeroed rows, with the sums kept in registers across t instead of stored and
// reloaded per cache row.
using wsum_rows_f32_fn = void (*)(double* y, int64_t ldy, const double* coef, int64_t ldc,
                                  int64_t rows, const float* x, int64_t ldx, int64_t len, int64_t n);
using wsum_rows_f16_fn = void (*)(double* y, int64_t ldy, const double* coef, int64_t ldc,
                                  int64_t rows, const uint16_t* x, int64_t ldx, int64_t len,
                                  int64_t n);

// llama.cpp's float ops: what the forward of a Q2_0 / Q1_0 model in group_mode "llama"
// uses for its float32 steps (attention, SwiGLU; docs/FORMATS.md 3.11), so that its Q8_0
// activations, and so its logits, are bit-identical to mainline llama.cpp's. They repeat
// the operations of ggml's x86 CPU backend as its AVX-512 build runs them, in the same
// order (ggml_ops.h); every ISA compiles the same portable source, so the same bits.
// out[g] = ggml_vec_dot_f32(a + g * lda, b, n): FMA into 4 x 16 float lanes (element i in
// lane i % 64), the lanes summed by halves, the tail n % 64 as ggml's binary does it.
using ggml_dot_rows_fn = void (*)(float* out, const float* a, int64_t lda, int64_t rows,
                                  const float* b, int64_t n);
// y[g * ldy + i] = sum over t < len of coef[g * ldc + t] * x[t * ldx + i] (i < n) in the
// order of ggml's matmul of one token (lanes 64: ggml_vec_dot_f32 over t) or of a batch
// (lanes 16: llamafile's tinyBLAS, one 16-lane FMA accumulator, t in lane t % 16).
using ggml_wsum_rows_fn = void (*)(float* y, int64_t ldy, const float* coef, int64_t ldc,
                                   int64_t rows, const float* x, int64_t ldx, int64_t len,
                                   int64_t n, int lanes);
// ggml_vec_soft_max_f32 on a row whose cells from n on are masked: y[i] = ggml_v_expf(x[i]
// - max) for i < n; returns their sum, per 16 cells a float sum by halves, added in double.
using ggml_soft_max_fn = double (*)(float* y, const float* x, int64_t n, float max);
// ggml_vec_swiglu_f32: y[i] = x[i] / (1 + ggml_v_expf(0 - x[i])) * g[i] per 16 values, the
// tail n % 16 with libm's expf (ggml_silu_f32); y may be x.
using ggml_swiglu_fn = void (*)(float* y, const float* x, const float* g, int64_t n);
// Compute roof of the ternary GEMM: `iters` rounds of the multiply-accumulate
// instructions it needs per 32 weights and token, from registers only, in
// independent chains. Returns the multiply-accumulates done (timed by the caller).
using mac_probe_fn = int64_t (*)(int64_t iters);

struct KernelTable {
    Isa isa = Isa::generic;
    quantize_act_fn quantize_act = nullptr;
    ternary_matmul_fn ternary_gemv = nullptr;  // tuned for n = 1..4 (decode); any n correct
    ternary_matmul_fn ternary_gemm = nullptr;  // tuned for large n (prefill); any n correct
    float_matmul_fn float_matmul[kNumFloatTypes] = {};
    float_row_fn float_row = nullptr;
    quantize_q8_k_fn quantize_q8_k = nullptr;
    q6_k_q8_k_matmul_fn matmul_q6_k_q8_k = nullptr;
    cvt_f32_f16_fn cvt_f32_f16 = nullptr;
    dot_f32_fn dot_f32 = nullptr;
    axpy_f32_fn axpy_f32 = nullptr;
    dot_f16_fn dot_f16 = nullptr;
    axpy_f16_fn axpy_f16 = nullptr;
    dot_rows_f32_fn dot_rows_f32 = nullptr;
    dot_rows_f16_fn dot_rows_f16 = nullptr;
    wsum_rows_f32_fn wsum_rows_f32 = nullptr;
    wsum_rows_f16_fn wsum_rows_f16 = nullptr;
    softmax_exp_fn softmax_exp = nullptr;
    mac_probe_fn mac_probe = nullptr;  // SIMD variants only
    quantize_q8_0_fn quantize_q8_0 = nullptr;
    group_matmul_fn group_matmul[kNumGroupTypes] = {};
    group_matmul_f32_fn group_matmul_f32 = nullptr;
    group_row_fn group_row = nullptr;
    ggml_dot_rows_fn ggml_dot_rows = nullptr;
    ggml_wsum_rows_fn ggml_wsum_rows = nullptr;
    ggml_soft_max_fn ggml_soft_max = nullptr;
    ggml_swiglu_fn ggml_swiglu = nullptr;
    // names for `tribit info`: set only with the pointer, by TRIBIT_SET_KERNEL below
    const char* quantize_act_name = "";
    const char* ternary_gemv_name = "";
    const char* ternary_gemm_name = "";
    const char* float_matmul_name[kNumFloatTypes] = {};
    const char* quantize_q8_0_name = "";
    const char* group_matmul_name[kNumGroupTypes] = {};
    const char* group_matmul_f32_name = "";
    const char* quantize_q8_k_name = "";
    const char* matmul_q6_k_q8_k_name = "";
};

// Install kernel `fn` in a named slot of KernelTable `t` together with its name, both
// from the same token: the name `tribit info` reports is the symbol that runs.
#define TRIBIT_SET_KERNEL(t, slot, fn) ((t).slot = (fn), (t).slot##_name = #fn)
// The same for the float matmul of FloatType::type.
#define TRIBIT_SET_FLOAT_KERNEL(t, type, fn)               \
    ((t).float_matmul[int(FloatType::type)] = (fn),        \
     (t).float_matmul_name[int(FloatType::type)] = #fn)

// The same for the group matmul (mode a) of GroupType::type.
#define TRIBIT_SET_GROUP_KERNEL(t, type, fn)               \
    ((t).group_matmul[int(GroupType::type)] = (fn),        \
     (t).group_matmul_name[int(GroupType::type)] = #fn)

// llama.cpp's quantize_row_q6_K_ref on rows [row_begin, row_end) of x (m, k),
// k % 256 == 0: out row r at out + r * (k / 256 * 210). The same float32
// operations in the same order as tribit.quant.quantize_q6_k (bit-identical bytes).
void quantize_q6_k_rows(uint8_t* out, const float* x, int64_t k, int64_t row_begin, int64_t row_end);

// Pack ternary t (m, k) in {-1, 0, 1} (row-major int8) into the common layout.
TernaryMatrix pack_ternary(const int8_t* t, int64_t m, int64_t k, float gamma);

// Selected table: TRIBIT_ISA if set (throws std::runtime_error if it cannot run
// here), else the best the CPU supports. Computed once.
const KernelTable& kernels();
// A specific variant; nullptr if not compiled in or not runnable on this CPU.
const KernelTable* kernels_for(Isa isa);
// The table of the variant `isa` names (nullopt: the selected one, kernels());
// std::invalid_argument if the name is unknown or the variant cannot run here.
const KernelTable& kernels_named(const std::optional<std::string>& isa);
bool isa_compiled(Isa isa);
bool isa_runnable(Isa isa);

// The parts of the per-ISA tables, each defined in csrc/kernels/<part>_<isa>.cpp
// (ternary: quantization and the ternary matmul; float: the head's matmuls;
// attention: the KV cache's vector kernels). A variant starts from the generic
// table and overwrites what it implements (dispatch.cpp).
void fill_ternary_generic(KernelTable& t);
void fill_group_generic(KernelTable& t);
void fill_group_avx2(KernelTable& t);
void fill_group_avx512(KernelTable& t);
void fill_float_generic(KernelTable& t);
void fill_attention_generic(KernelTable& t);
void fill_q6_k_q8_k_generic(KernelTable& t);  // the q6_k head's integer path
void fill_ggml_generic(KernelTable& t);  // llama.cpp's float ops, per ISA
void fill_ggml_avx2(KernelTable& t);
void fill_ggml_avx512(KernelTable& t);
void fill_q6_k_q8_k_avx2(KernelTable& t);
void fill_ternary_avx2(KernelTable& t);
void fill_float_avx2(KernelTable& t);
void fill_attention_avx2(KernelTable& t);
void fill_ternary_avx512(KernelTable& t);
void fill_float_avx512(KernelTable& t);
void fill_attention_avx512(KernelTable& t);
void fill_ternary_neon(KernelTable& t);
void fill_float_neon(KernelTable& t);

// Shared pieces of the generic code other variants reuse for tails.
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
inline float bf16_to_fp32(uint16_t h) {
    uint32_t u = uint32_t(h) << 16;
    float f;
    __builtin_memcpy(&f, &u, 4);
    return f;
}

}  // namespace tribit
