// The BitNet b1.58 forward pass: weights, KV cache with sequence slots, and a
// llama.cpp-style batch (token i at position pos[i] of sequence seq[i]).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels.h"
#include "threadpool.h"

namespace tribit {

struct ModelParams {
    int64_t n_embd = 0, n_ff = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
    int64_t n_rot = 0;  // rotated dims per head (== head_dim for all known models)
    int64_t n_vocab = 0, n_ctx = 0, n_seq = 1;
    float rope_theta = 10000.0f, norm_eps = 1e-5f;
    bool rope_neox = true;   // NeoX pairs (i, i + n_rot/2) vs normal (2i, 2i+1)
    bool act_relu2 = true;   // ReLU^2 (2B-4T) or SiLU (1bitLLM, llama)
    bool kv_f16 = true;
    // Q2_0 / Q1_0 matrices (kernels.h): mode (a), Q8_0 activations as llama.cpp (false), or
    // mode (b), the float-activation reference (true)
    bool group_f32 = false;
    int n_threads = 1;
};

// Most worker threads a model may ask for (the Python API caps far lower,
// with a message; this bound keeps a direct call from exhausting the OS).
constexpr int kMaxThreads = 4096;

// Elements of one of the K/V caches (n_layer * n_seq * n_ctx * n_head_kv * head_dim),
// computed overflow-checked: throws std::length_error when it, or its byte count, wraps.
size_t kv_cache_elements(const ModelParams& p);

struct Layer {
    std::vector<float> attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm;  // sub-norms may be empty
    // Qwen3: per-head RMSNorm of q and k before RoPE (head_dim weights; empty: none)
    std::vector<float> attn_q_norm, attn_k_norm;
    TernaryMatrix wq, wk, wv, wo, wgate, wup, wdown;
    // optional RMSNorm of each projection's input, as wide as its K (BitNet-embedding's
    // per-projection norms, docs/FORMATS.md 1.6); empty: the input goes in as it is
    std::vector<float> wq_in, wk_in, wv_in, wo_in, wgate_in, wup_in, wdown_in;
    // the same projections when the file stores them as Q2_0 / Q1_0 (then used instead)
    GroupMatrix gq, gk, gv, go, ggate, gup, gdown;
};

// Where a forward pass spends its wall time (Model::profile): each op's time is
// measured on the calling thread around the whole parallel section, so waits
// for the slowest thread count too.
enum class Op : int {
    embed, norm, quantize, matmul_qkv, rope, kv_store, attention, matmul_out,
    matmul_gate_up, activation, matmul_down, residual, head, count
};
const char* op_name(Op op);

struct OpProfile {
    double seconds[int(Op::count)] = {};
    int64_t calls[int(Op::count)] = {};
};

class Model {
public:
    Model(const ModelParams& p, const KernelTable& kt);
    ~Model();

    ModelParams params;
    const KernelTable& kt;
    std::vector<Layer> layers;
    std::vector<float> output_norm;
    FloatMatrix tok_embd, output;  // output == tok_embd when tied
    GroupMatrix tok_embd_g, output_g;  // Q2_0 / Q1_0 embedding / head (used when set)
    // A q6_k head runs the integer path (final-norm rows to q8_K, then
    // matmul_q6_k_q8_k; docs/KERNELS.md "The Q6_K head's integer path"); false: the
    // float kernel float_matmul[q6_k] on float activations. From TRIBIT_Q6K_HEAD at construction
    // ("float" selects the float kernel, for comparisons).
    bool q6_k_int_head = true;

    // Runs the batch; writes logits of the rows with want[i] into `out`
    // (count(want) x n_vocab, in batch order), or with `hidden` their final-norm hidden
    // states (count(want) x n_embd: what embeddings pool; the head is not computed).
    // Throws std::invalid_argument on a bad batch (position gaps, out-of-range ids).
    void forward(const int32_t* tokens, const int32_t* pos, const int32_t* seq, const uint8_t* want,
                 int64_t n, float* out, bool hidden = false);
    // Tokens already in the KV cache of sequence slot `seq` (its next position).
    int64_t n_past(int64_t seq) const { return n_past_[seq]; }
    void reset(int64_t seq);  // -1: all
    void trim(int64_t seq, int64_t n);
    size_t kv_bytes() const;
    size_t weight_bytes() const;
    // Wall time per op since construction or the last reset_profile().
    const OpProfile& profile() const { return prof_; }
    void reset_profile() { prof_ = OpProfile(); }

private:
    std::unique_ptr<ThreadPool> pool_;
    OpProfile prof_;
    std::vector<int64_t> n_past_;
    // KV cache: [layer][seq][kv head][pos][head_dim], f16 or f32: the rows one
    // attention item reads (one kv head of one sequence) are contiguous, so they
    // stream from DRAM instead of one 2-3-line row per kvdim stride
    std::vector<uint16_t> k16_, v16_;
    std::vector<float> k32_, v32_;
    // scratch, sized for the current batch
    int64_t cap_ = 0;
    std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_, tmp_, nin_;
    std::vector<int8_t> qa_;
    std::vector<float> qs_;
    std::vector<int32_t> qsum_;
    std::vector<int8_t> q8_;     // Q8_0 activations of the group matrices (n x k)
    std::vector<float> q8d_;     // their block scales (n x k / 32)
    std::vector<int32_t> q8s_;   // their block sums
    std::vector<uint8_t> q8k_;  // the head's q8_K activations (q6_k head)
    std::vector<double> att_scratch_;  // per thread: scores + output rows
    std::vector<float> att32_scratch_;  // the same in float for attention_llama
    // llama.cpp's float arithmetic (kernels.h "llama.cpp's float ops") for norms, RoPE,
    // attention and SwiGLU: set by forward() when Q2_0 / Q1_0 projections compute in
    // group_mode "llama" (docs/FORMATS.md 3.11)
    bool llama_ops_ = false;
    std::vector<double> rope_freq_;    // base^(-2i/n_rot), i < n_rot/2
    std::vector<float> rope_cs_;       // per batch token: cos, sin of each pair (rope_angles)

    void reserve(int64_t n);
    void rmsnorm(float* out, const float* x, const float* w, int64_t n, int64_t d);
    // y_i (n x ldy_i) = BitLinear_i(x) for up to 3 matrices sharing the input x
    // (a projection is a GroupMatrix instead when gs[i] is set: Q8_0 or float activations)
    void bitlinear(Op op, float* const* ys, const int64_t* ldys, const TernaryMatrix* const* ws,
                   const GroupMatrix* const* gs, int n_mats, const float* x, int64_t ldx, int64_t n);
    // the same with each matrix's optional input norm (norms[i] empty: none): matrices
    // without one share the quantized input, each one with a norm gets its own pass
    void bitlinear_in(Op op, float* const* ys, const int64_t* ldys, const TernaryMatrix* const* ws,
                      const GroupMatrix* const* gs, const std::vector<float>* const* norms,
                      int n_mats, const float* x, int64_t ldx, int64_t n);
    // y (n x w.m, rows ldy apart) = w x, in the model's group mode
    void group_linear(float* y, int64_t ldy, const GroupMatrix& w, const float* x, int64_t ldx, int64_t n,
                      int64_t grain);
    // rotates the n tokens' query and key heads in place
    void rope_angles(const int32_t* pos, int64_t n);
    void rope(float* q, float* k, int64_t n);
    void activation(float* g, const float* u, int64_t n);
    void store_kv(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n);
    void attention(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n);
    void attention_llama(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n);
    size_t kv_index(int64_t layer, int64_t seq, int64_t head, int64_t pos) const;
};

}  // namespace tribit
