#include "model.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace tribit {

const char* op_name(Op op) {
    static const char* const names[] = {
        "embed", "norm", "quantize", "matmul_qkv", "rope", "kv_store", "attention",
        "matmul_out", "matmul_gate_up", "activation", "matmul_down", "residual", "head"};
    static_assert(sizeof(names) / sizeof(names[0]) == size_t(Op::count), "one name per op");
    return names[int(op)];
}

namespace {
// Adds the wall time of its scope to one op of a profile (~20 ns a scope).
class OpTimer {
public:
    OpTimer(OpProfile& p, Op op) : p_(p), op_(int(op)), t0_(std::chrono::steady_clock::now()) {}
    ~OpTimer() {
        p_.seconds[op_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
        p_.calls[op_]++;
    }
private:
    OpProfile& p_;
    int op_;
    std::chrono::steady_clock::time_point t0_;
};

// a * b in size_t, or throw: every size computed from metadata or arguments goes
// through here (a wrapped KV-cache size once became an empty vector that the
// first forward wrote through)
size_t checked_mul(size_t a, size_t b, const char* what) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r))
        throw std::length_error(std::string(what) + " overflows the address space");
    return r;
}

size_t checked_dim(int64_t v, const char* what) {
    if (v <= 0) throw std::invalid_argument(std::string(what) + " must be positive");
    return size_t(v);
}

}  // namespace

// Query rows one attention item serves at most: the query heads of a GQA group (1-8 in
// every known model; a larger group is split into slices) times the tokens of a run
// (attention()). Sizes attention()'s scratch.
constexpr int64_t kMaxGroup = 16;

size_t kv_cache_elements(const ModelParams& p) {
    size_t kv = checked_mul(checked_dim(p.n_layer, "n_layer"), checked_dim(p.n_seq, "n_seq"), "KV cache size");
    kv = checked_mul(kv, checked_dim(p.n_ctx, "n_ctx"), "KV cache size");
    kv = checked_mul(kv, checked_mul(checked_dim(p.n_head_kv, "n_head_kv"), checked_dim(p.head_dim, "head_dim"),
                                     "KV cache size"),
                     "KV cache size");
    // K and V, 2 or 4 bytes each: the byte count must fit too
    checked_mul(kv, p.kv_f16 ? 4 : 8, "KV cache size");
    return kv;
}

Model::Model(const ModelParams& p, const KernelTable& table) : params(p), kt(table) {
    if (const char* h = std::getenv("TRIBIT_Q6K_HEAD")) q6_k_int_head = std::string(h) != "float";
    if (p.n_head <= 0 || p.n_head_kv <= 0 || p.n_head % p.n_head_kv)
        throw std::invalid_argument("n_head must be a positive multiple of n_head_kv");
    if (p.n_seq <= 0 || p.n_ctx <= 0) throw std::invalid_argument("n_seq and n_ctx must be positive");
    // positions and sequence ids cross the boundary as int32
    if (p.n_ctx > INT32_MAX || p.n_seq > INT32_MAX)
        throw std::invalid_argument("n_ctx and n_seq must be below 2^31");
    for (int64_t v : {p.n_embd, p.n_ff, p.n_layer, p.head_dim, p.n_vocab})
        if (v <= 0) throw std::invalid_argument("n_embd, n_ff, n_layer, head_dim and n_vocab must be positive");
    if (p.n_rot <= 0 || p.n_rot > p.head_dim || p.n_rot % 2)
        throw std::invalid_argument("rope dimension count must be even and <= head_dim");
    if (p.n_threads < 1 || p.n_threads > kMaxThreads)
        throw std::invalid_argument("n_threads must be in [1, " + std::to_string(kMaxThreads) + "]");
    const size_t kv = kv_cache_elements(p);
    // attention scratch per thread (attention()): rows x n_ctx scores + 2 rows x head_dim,
    // rows (query heads x tokens of a run) <= kMaxGroup
    const size_t per_thread = checked_mul(size_t(kMaxGroup), size_t(p.n_ctx) + 2 * size_t(p.head_dim), "attention scratch");
    const size_t scratch = checked_mul(checked_mul(per_thread, size_t(p.n_threads), "attention scratch"),
                                       sizeof(double), "attention scratch") / sizeof(double);
    pool_ = std::make_unique<ThreadPool>(p.n_threads);
    layers.resize(size_t(p.n_layer));
    n_past_.assign(size_t(p.n_seq), 0);
    for (int64_t i = 0; i < p.n_rot / 2; i++)
        rope_freq_.push_back(std::pow(double(p.rope_theta), -2.0 * double(i) / double(p.n_rot)));
    auto too_big = [&] {
        return std::runtime_error("cannot allocate the KV cache: it needs " +
                                  std::to_string(kv * (p.kv_f16 ? 4 : 8)) + " bytes");
    };
    try {
        if (p.kv_f16) {
            k16_.assign(kv, 0);
            v16_.assign(kv, 0);
        } else {
            k32_.assign(kv, 0.0f);
            v32_.assign(kv, 0.0f);
        }
        att_scratch_.assign(scratch, 0.0);
    } catch (const std::bad_alloc&) {
        throw too_big();
    } catch (const std::length_error&) {  // past the vector's max_size()
        throw too_big();
    }
}

Model::~Model() = default;

size_t Model::kv_index(int64_t layer, int64_t seq, int64_t head, int64_t pos) const {
    const ModelParams& p = params;
    const size_t slot = (size_t(layer) * size_t(p.n_seq) + size_t(seq)) * size_t(p.n_head_kv) + size_t(head);
    return (slot * size_t(p.n_ctx) + size_t(pos)) * size_t(p.head_dim);
}

size_t Model::kv_bytes() const {
    return (k16_.size() + v16_.size()) * 2 + (k32_.size() + v32_.size()) * 4;
}

size_t Model::weight_bytes() const {
    size_t b = 0;
    auto gbytes = [](const GroupMatrix& g) { return g.empty() ? size_t(0) : size_t(g.m_pad / kGroupRows * g.group_bytes); };
    for (const Layer& l : layers) {
        for (const TernaryMatrix* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.wgate, &l.wup, &l.wdown})
            b += size_t(w->m * w->row_bytes);
        for (const GroupMatrix* g : {&l.gq, &l.gk, &l.gv, &l.go, &l.ggate, &l.gup, &l.gdown}) b += gbytes(*g);
    }
    b += size_t(tok_embd.m * tok_embd.row_bytes) + gbytes(tok_embd_g);
    if (output.data != tok_embd.data) b += size_t(output.m * output.row_bytes);
    if (output_g.data != tok_embd_g.data) b += gbytes(output_g);
    return b;
}

void Model::reset(int64_t seq) {
    if (seq < 0) std::fill(n_past_.begin(), n_past_.end(), 0);
    else n_past_.at(size_t(seq)) = 0;
}

void Model::trim(int64_t seq, int64_t n) {
    int64_t& np = n_past_.at(size_t(seq));
    np = std::max<int64_t>(0, std::min(np, n));
}

void Model::reserve(int64_t n) {
    if (n <= cap_) return;
    const ModelParams& p = params;
    const int64_t kmax = std::max({ternary_k_pad(p.n_embd), ternary_k_pad(p.n_ff),
                                   ternary_k_pad(p.n_head * p.head_dim)});
    const int64_t qdim = p.n_head * p.head_dim, kvdim = p.n_head_kv * p.head_dim;
    x_.assign(size_t(n * p.n_embd), 0);
    h_.assign(size_t(n * std::max(p.n_embd, qdim)), 0);
    q_.assign(size_t(n * qdim), 0);
    k_.assign(size_t(n * kvdim), 0);
    v_.assign(size_t(n * kvdim), 0);
    att_.assign(size_t(n * qdim), 0);
    gate_.assign(size_t(n * p.n_ff), 0);
    up_.assign(size_t(n * p.n_ff), 0);
    tmp_.assign(size_t(n * std::max(p.n_embd, p.n_ff)), 0);
    nin_.assign(size_t(n * std::max({p.n_embd, p.n_ff, qdim})), 0);
    qa_.assign(size_t(n * kmax), 0);
    qs_.assign(size_t(n), 0);
    qsum_.assign(size_t(n), 0);
    const int64_t kg = std::max({p.n_embd, p.n_ff, p.n_head * p.head_dim});
    q8_.assign(size_t(n * kg), 0);
    q8d_.assign(size_t(n * (kg / 32 + 1)), 0);
    q8s_.assign(size_t(n * (kg / 32 + 1)), 0);
    cap_ = n;
}

// Row-wise ops (norms, quantization, the activation) are split over the threads
// only from this many values on: below, one thread finishes in a few us, less
// than waking the pool costs on a busy machine (8 decode streams' norms took more
// time in barriers than in arithmetic there).
constexpr int64_t kSplitMin = 1 << 16;

// sum of x[i]^2 in double: eight partial sums over i = j (mod 8), then
// ((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7)), then the tail in order.
// Portable code in one fixed order, so the same doubles on every ISA; the eight
// chains vectorize (one running sum was latency-bound: ~4 % of a prefill).
static double sum_squares(const float* x, int64_t d) {
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= d; i += 8)
        for (int j = 0; j < 8; j++) s[j] += double(x[i + j]) * double(x[i + j]);
    double ss = ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
    for (; i < d; i++) ss += double(x[i]) * double(x[i]);
    return ss;
}

// ggml's rms_norm sum: each square rounded to float, then added in double in index order
static double sum_squares_llama(const float* x, int64_t d) {
    double s = 0.0;
    for (int64_t i = 0; i < d; i++) s += double(x[i] * x[i]);
    return s;
}

// RMSNorm: sum of squares in double (sum_squares; with llama_ops_ ggml's own sum,
// sum_squares_llama), mean narrowed to float, scale = 1/sqrtf(mean + eps),
// y = (x * scale) * w, as ggml's rms_norm and mul.
void Model::rmsnorm(float* out, const float* x, const float* w, int64_t n, int64_t d) {
    OpTimer timer(prof_, Op::norm);
    const float eps = params.norm_eps;
    const bool llama = llama_ops_;
    auto body = [&](int64_t b, int64_t e) {
        for (int64_t j = b; j < e; j++) {
            const float* xr = x + j * d;
            float* yr = out + j * d;
            const float mean = float((llama ? sum_squares_llama(xr, d) : sum_squares(xr, d)) / double(d));
            const float scale = 1.0f / std::sqrt(mean + eps);
            for (int64_t i = 0; i < d; i++) yr[i] = (xr[i] * scale) * w[i];
        }
    };
    if (n * d >= kSplitMin) pool_->parallel_for(n, 1, body);
    else body(0, n);
}

// Quantize x (n tokens) once, then run one or several matrices that share the
// input (Q/K/V; gate/up) in a single parallel pass over their stacked rows.
void Model::group_linear(float* y, int64_t ldy, const GroupMatrix& w, const float* x, int64_t ldx,
                         int64_t n, int64_t grain) {
    if (params.group_f32) {
        pool_->parallel_for(w.m, grain, [&](int64_t b, int64_t e) {
            kt.group_matmul_f32(y, ldy, w, x, ldx, n, b, e);
        });
        return;
    }
    const int64_t k = w.k, na = k / 32;
    auto quant = [&](int64_t b, int64_t e) {
        kt.quantize_q8_0(q8_.data() + b * k, q8d_.data() + b * na, q8s_.data() + b * na, x + b * ldx, ldx,
                         e - b, k);
    };
    if (n * k >= kSplitMin) pool_->parallel_for(n, 1, quant);
    else quant(0, n);
    group_matmul_fn fn = kt.group_matmul[int(w.type)];
    pool_->parallel_for(w.m, grain, [&](int64_t b, int64_t e) {
        fn(y, ldy, w, q8_.data(), q8d_.data(), q8s_.data(), n, b, e);
    });
}

void Model::bitlinear(Op op, float* const* ys, const int64_t* ldys, const TernaryMatrix* const* ws,
                      const GroupMatrix* const* gs, int n_mats, const float* x, int64_t ldx, int64_t n) {
    bool any_group = false, all_group = true;
    for (int i = 0; i < n_mats; i++) {
        any_group |= !gs[i]->empty();
        all_group &= !gs[i]->empty();
    }
    if (any_group) {
        // Q2_0 / Q1_0: one matrix at a time (the activations are requantized per matrix:
        // cheap next to the matmul), the ternary ones of a mixed group as before
        OpTimer timer(prof_, op);
        for (int i = 0; i < n_mats; i++)
            if (!gs[i]->empty()) group_linear(ys[i], ldys[i], *gs[i], x, ldx, n, 16);
        if (all_group) return;
        const TernaryMatrix* tw[3];
        float* ty[3];
        int64_t tl[3];
        const GroupMatrix* none[3] = {};
        static const GroupMatrix kEmpty;
        int nt = 0;
        for (int i = 0; i < n_mats; i++)
            if (gs[i]->empty()) {
                tw[nt] = ws[i];
                ty[nt] = ys[i];
                tl[nt] = ldys[i];
                none[nt] = &kEmpty;
                nt++;
            }
        bitlinear(op, ty, tl, tw, none, nt, x, ldx, n);
        return;
    }
    const int64_t k = ws[0]->k, k_pad = ws[0]->k_pad;
    int8_t* q = qa_.data();
    auto quant = [&](int64_t b, int64_t e) {
        kt.quantize_act(q + b * k_pad, k_pad, qs_.data() + b, qsum_.data() + b, x + b * ldx, ldx,
                        e - b, k);
    };
    {
        OpTimer timer(prof_, Op::quantize);
        if (n * k >= kSplitMin) pool_->parallel_for(n, 1, quant);
        else quant(0, n);
    }
    OpTimer timer(prof_, op);
    ternary_matmul_fn fn = n == 1 ? kt.ternary_gemv : kt.ternary_gemm;
    int64_t total = 0;
    int64_t starts[3];
    for (int i = 0; i < n_mats; i++) {
        starts[i] = total;
        total += ws[i]->m;
    }
    // row grain of 16 keeps the kernels' 4-row groups whole
    pool_->parallel_for(total, 16, [&](int64_t b, int64_t e) {
        for (int i = 0; i < n_mats; i++) {
            int64_t lo = std::max(b, starts[i]), hi = std::min(e, starts[i] + ws[i]->m);
            if (lo < hi)
                fn(ys[i], ldys[i], *ws[i], q, k_pad, qs_.data(), qsum_.data(), n,
                   lo - starts[i], hi - starts[i]);
        }
    });
}

void Model::bitlinear_in(Op op, float* const* ys, const int64_t* ldys, const TernaryMatrix* const* ws,
                         const GroupMatrix* const* gs, const std::vector<float>* const* norms,
                         int n_mats, const float* x, int64_t ldx, int64_t n) {
    float* plain_ys[3];
    int64_t plain_ld[3];
    const TernaryMatrix* plain_ws[3];
    const GroupMatrix* plain_gs[3];
    int n_plain = 0;
    for (int i = 0; i < n_mats; i++) {
        if (norms[i]->empty()) {
            plain_ys[n_plain] = ys[i];
            plain_ld[n_plain] = ldys[i];
            plain_gs[n_plain] = gs[i];
            plain_ws[n_plain++] = ws[i];
            continue;
        }
        // x -> RMSNorm(x, norm_in) -> int8 -> ternary matmul, into a dense n x k buffer
        const int64_t k = gs[i]->empty() ? ws[i]->k : gs[i]->k;
        const float* xin = x;
        if (ldx != k) {  // rmsnorm reads dense rows
            for (int64_t j = 0; j < n; j++)
                std::memcpy(nin_.data() + j * k, x + j * ldx, size_t(k) * 4);
            xin = nin_.data();
        }
        rmsnorm(nin_.data(), xin, norms[i]->data(), n, k);
        bitlinear(op, ys + i, ldys + i, ws + i, gs + i, 1, nin_.data(), k, n);
    }
    if (n_plain) bitlinear(op, plain_ys, plain_ld, plain_ws, plain_gs, n_plain, x, ldx, n);
}

// The cosine and sine of each batch token's angles pos * base^(-2i/n_rot), once
// per forward for all layers: in double, rounded to float once (as tribit.train's
// tables: the same floats).
// With llama_ops_, ggml's rope cache instead: theta_scale = powf(base, -2.0f / n_rot) and
// theta = pos, theta *= theta_scale per pair, in float, and cosf / sinf of it.
void Model::rope_angles(const int32_t* pos, int64_t n) {
    OpTimer timer(prof_, Op::rope);
    const int64_t half = params.n_rot / 2;
    rope_cs_.resize(size_t(n * half * 2));
    if (llama_ops_) {
        const float theta_scale = std::pow(params.rope_theta, -2.0f / float(params.n_rot));
        for (int64_t j = 0; j < n; j++) {
            float theta = float(pos[j]);
            for (int64_t i = 0; i < half; i++) {
                rope_cs_[size_t((j * half + i) * 2)] = std::cos(theta);
                rope_cs_[size_t((j * half + i) * 2 + 1)] = std::sin(theta);
                theta = theta * theta_scale;
            }
        }
        return;
    }
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < half; i++) {
            const double theta = double(pos[j]) * rope_freq_[size_t(i)];
            rope_cs_[size_t((j * half + i) * 2)] = float(std::cos(theta));
            rope_cs_[size_t((j * half + i) * 2 + 1)] = float(std::sin(theta));
        }
}

// ggml's rotation as GCC compiled it: NeoX pairs in a scalar loop, contracted to FMAs;
// normal pairs vectorized, 8 pairs a zmm, then 4 a ymm (fused), the last 0-3 pairs in xmm
// without FMA (checked against llama.cpp for 2 to 64 pairs).
static int64_t rope_fused_pairs(int64_t half, bool neox) {
    if (neox) return half;
    return half / 8 * 8 + (half % 8 >= 4 ? 4 : 0);
}

void Model::rope(float* q, float* k, int64_t n) {
    OpTimer timer(prof_, Op::rope);
    const ModelParams& p = params;
    const int64_t hd = p.head_dim, half = p.n_rot / 2;
    const int64_t n_fused = rope_fused_pairs(half, p.rope_neox);
    for (int64_t j = 0; j < n; j++) {
        for (int64_t i = 0; i < half; i++) {
            const float* cs = rope_cs_.data() + (j * half + i) * 2;
            const float c = cs[0], s = cs[1];
            const bool fused = i < n_fused;
            const int64_t a = p.rope_neox ? i : 2 * i, b = p.rope_neox ? i + half : 2 * i + 1;
            auto rotate = [&](float* x, int64_t n_heads) {
                for (int64_t h = 0; h < n_heads; h++) {
                    float* v = x + (j * n_heads + h) * hd;
                    const float x0 = v[a], x1 = v[b];
                    if (llama_ops_ && fused) {
                        // ggml's binary (GCC contracted x0*cos - x1*sin and x0*sin + x1*cos):
                        // the x1 product rounded, the x0 one fused
                        v[a] = std::fma(x0, c, -(x1 * s));
                        v[b] = std::fma(x0, s, x1 * c);
                    } else {
                        v[a] = x0 * c - x1 * s;
                        v[b] = x0 * s + x1 * c;
                    }
                }
            };
            rotate(q, p.n_head);
            rotate(k, p.n_head_kv);
        }
    }
}

// g = act(g) * u over n values: ReLU^2 (a > 0 ? a * a : 0, NaN -> 0) or SiLU.
// One loop per activation, so the ReLU^2 one vectorizes (a select, not a
// branch: random signs made it ~25 cycles a value), split over the threads.
void Model::activation(float* g, const float* u, int64_t n) {
    OpTimer timer(prof_, Op::activation);
    if (llama_ops_ && !params.act_relu2) {  // ggml_vec_swiglu_f32, row by row of n_ff
        const int64_t nf = params.n_ff, rows = n / nf;
        auto per_row = [&](int64_t b, int64_t e) {
            for (int64_t j = b; j < e; j++) kt.ggml_swiglu(g + j * nf, g + j * nf, u + j * nf, nf);
        };
        if (n >= kSplitMin) pool_->parallel_for(rows, 1, per_row);
        else per_row(0, rows);
        return;
    }
    auto body = [&](int64_t b, int64_t e) {
        if (params.act_relu2) {
            for (int64_t i = b; i < e; i++) {
                const float a = g[i];
                g[i] = (a > 0.0f ? a * a : 0.0f) * u[i];
            }
        } else {
            for (int64_t i = b; i < e; i++) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
        }
    };
    if (n >= kSplitMin) pool_->parallel_for(n, 16384, body);  // prefill; decode is too short to split
    else body(0, n);
}

// The batch's K and V rows into the cache (f16: rounded to nearest even).
void Model::store_kv(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n) {
    OpTimer timer(prof_, Op::kv_store);
    const ModelParams& p = params;
    const int64_t hd = p.head_dim, kvdim = p.n_head_kv * hd;
    for (int64_t j = 0; j < n; j++) {
        for (int64_t hk = 0; hk < p.n_head_kv; hk++) {
            const size_t at = kv_index(layer, seq[j], hk, pos[j]);
            const float *kj = k_.data() + j * kvdim + hk * hd, *vj = v_.data() + j * kvdim + hk * hd;
            if (p.kv_f16) {
                kt.cvt_f32_f16(k16_.data() + at, kj, hd);
                kt.cvt_f32_f16(v16_.data() + at, vj, hd);
            } else {
                std::memcpy(k32_.data() + at, kj, size_t(hd) * 4);
                std::memcpy(v32_.data() + at, vj, size_t(hd) * 4);
            }
        }
    }
}

// Causal GQA attention of each batch token over its sequence's cache entries
// 0..pos[i]. Work items are (run of consecutive tokens of one sequence, kv head,
// slice of its query heads): every K/V row is read once per item and used by the
// query heads of the slice for every token of the run while it is in L1 (an f16 row
// is widened once for up to kMaxGroup query rows), so neither a GQA group nor the
// tokens of a prompt re-read the cache. Slices shrink only when there are fewer
// items than threads (decode of one token). Per (token, query head) the arithmetic
// is the same as one at a time: scores, softmax and the weighted sum of values run
// in double, rounded to float once at the output (kernels.h: the same floats on
// every ISA and in tribit.train).
void Model::attention(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n) {
    if (llama_ops_ && !params.kv_f16) return attention_llama(layer, pos, seq, n);
    OpTimer timer(prof_, Op::attention);
    const ModelParams& p = params;
    const int64_t hd = p.head_dim, group = p.n_head / p.n_head_kv;
    const double inv_sqrt = 1.0 / std::sqrt(double(hd));
    const int nth = pool_->n_threads();
    int64_t gs = std::min<int64_t>(group, kMaxGroup);  // query heads per item, a divisor of group
    while (group % gs) gs--;
    // runs of up to kMaxGroup / gs tokens: the same sequence at consecutive positions
    const int64_t max_run = std::max<int64_t>(1, kMaxGroup / gs);
    std::vector<int64_t> runs;  // first token of each run, then n
    for (int64_t j = 0; j < n; j++)
        if (runs.empty() || j - runs.back() >= max_run || seq[j] != seq[j - 1] || pos[j] != pos[j - 1] + 1)
            runs.push_back(j);
    const int64_t n_runs = int64_t(runs.size());
    runs.push_back(n);
    while (gs > 1 && n_runs * p.n_head_kv * (group / gs) < nth) {
        int64_t d = gs - 1;
        while (group % d) d--;
        gs = d;
    }
    const int64_t slices = group / gs, items = n_runs * p.n_head_kv * slices;
    const size_t per_thread = size_t(kMaxGroup * p.n_ctx + 2 * kMaxGroup * hd);
    if (att_scratch_.size() < per_thread * size_t(nth)) att_scratch_.assign(per_thread * size_t(nth), 0);
    // items are taken from a shared counter: their cost grows with the sequence's length
    std::atomic<int64_t> next{0};
    pool_->run([&](int ith, int) {
        double* scores = att_scratch_.data() + per_thread * size_t(ith);  // rows x n_ctx
        double* out = scores + kMaxGroup * p.n_ctx;                        // rows x hd
        double* qd = out + kMaxGroup * hd;  // the query rows, widened once (exact)
        for (int64_t idx; (idx = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
            const int64_t ri = idx / (p.n_head_kv * slices), r = idx % (p.n_head_kv * slices);
            const int64_t j0 = runs[size_t(ri)], nj = runs[size_t(ri) + 1] - j0;
            const int64_t hk = r / slices, h0 = hk * group + (r % slices) * gs;
            const int64_t rows = nj * gs;  // row u * gs + g: token j0 + u, query head h0 + g
            for (int64_t u = 0; u < nj; u++) {
                const float* qv = q_.data() + (j0 + u) * p.n_head * hd + h0 * hd;
                for (int64_t i = 0; i < gs * hd; i++) qd[u * gs * hd + i] = double(qv[i]);
            }
            const int64_t len = pos[j0 + nj - 1] + 1;  // the run's last token sees the most
            const size_t base = kv_index(layer, seq[j0], hk, 0);  // its rows are contiguous
            // an f16 cache is read by the f16 kernels (widened on load, same results)
            if (p.kv_f16) kt.dot_rows_f16(scores, p.n_ctx, qd, hd, rows, k16_.data() + base, hd, len, hd);
            else kt.dot_rows_f32(scores, p.n_ctx, qd, hd, rows, k32_.data() + base, hd, len, hd);
            for (int64_t u = 0; u < nj; u++) {
                const int64_t len_u = pos[j0 + u] + 1;  // causal: the later rows are not its
                for (int64_t g = 0; g < gs; g++) {
                    double* sc = scores + (u * gs + g) * p.n_ctx;
                    for (int64_t t = 0; t < len_u; t++) sc[t] = sc[t] * inv_sqrt;
                    double mx = -INFINITY;
                    for (int64_t t = 0; t < len_u; t++) mx = std::max(mx, sc[t]);
                    const double sum = kt.softmax_exp(sc, len_u, mx);
                    for (int64_t t = 0; t < len_u; t++) sc[t] = sc[t] / sum;
                }
            }
            // the value rows every token of the run sees, for all rows at once; then each
            // later token's own rows, in t order (axpy: the same operations, kernels.h)
            const int64_t len0 = pos[j0] + 1;
            if (p.kv_f16) kt.wsum_rows_f16(out, hd, scores, p.n_ctx, rows, v16_.data() + base, hd, len0, hd);
            else kt.wsum_rows_f32(out, hd, scores, p.n_ctx, rows, v32_.data() + base, hd, len0, hd);
            for (int64_t u = 1; u < nj; u++)
                for (int64_t t = len0; t < len0 + u; t++)
                    for (int64_t g = 0; g < gs; g++) {
                        const double c = scores[(u * gs + g) * p.n_ctx + t];
                        double* o = out + (u * gs + g) * hd;
                        if (p.kv_f16) kt.axpy_f16(o, c, v16_.data() + base + size_t(t * hd), hd);
                        else kt.axpy_f32(o, c, v32_.data() + base + size_t(t * hd), hd);
                    }
            for (int64_t u = 0; u < nj; u++) {
                float* dst = att_.data() + (j0 + u) * p.n_head * hd + h0 * hd;
                for (int64_t i = 0; i < gs * hd; i++) dst[i] = float(out[u * gs * hd + i]);
            }
        }
    });
}

// Attention as llama.cpp computes it without flash attention over an f32 KV cache, in
// float32 (kernels.h "llama.cpp's float ops"): scores ggml_vec_dot_f32(k, q), times
// 1.0f / sqrtf(head_dim), softmax (ggml_soft_max: exp, the sum in double, then each value
// times float(1 / sum)), and the weighted sum of values in the order of ggml's matmul:
// tinyBLAS for a batch of 2 tokens or more, ggml_vec_dot_f32 for one. Work items as in
// attention().
void Model::attention_llama(int64_t layer, const int32_t* pos, const int32_t* seq, int64_t n) {
    OpTimer timer(prof_, Op::attention);
    const ModelParams& p = params;
    const int64_t hd = p.head_dim, group = p.n_head / p.n_head_kv;
    const float kq_scale = 1.0f / std::sqrt(float(hd));
    // llamafile's sgemm takes a batch (n >= 2) when the value rows are a multiple of 4
    const int lanes = n >= 2 && hd % 4 == 0 ? 16 : 64;
    const int nth = pool_->n_threads();
    int64_t gs = std::min<int64_t>(group, kMaxGroup);
    while (group % gs) gs--;
    while (gs > 1 && n * p.n_head_kv * (group / gs) < nth) {
        int64_t d = gs - 1;
        while (group % d) d--;
        gs = d;
    }
    const int64_t slices = group / gs, items = n * p.n_head_kv * slices;
    const size_t per_thread = size_t(gs * p.n_ctx);
    if (att32_scratch_.size() < per_thread * size_t(nth)) att32_scratch_.assign(per_thread * size_t(nth), 0);
    std::atomic<int64_t> next{0};
    pool_->run([&](int ith, int) {
        float* scores = att32_scratch_.data() + per_thread * size_t(ith);  // gs x n_ctx
        for (int64_t idx; (idx = next.fetch_add(1, std::memory_order_relaxed)) < items;) {
            const int64_t j = idx / (p.n_head_kv * slices), r = idx % (p.n_head_kv * slices);
            const int64_t hk = r / slices, h0 = hk * group + (r % slices) * gs;
            const float* qv = q_.data() + j * p.n_head * hd + h0 * hd;
            const int64_t len = pos[j] + 1;
            const size_t base = kv_index(layer, seq[j], hk, 0);
            float dots[kMaxGroup];
            for (int64_t t = 0; t < len; t++) {
                kt.ggml_dot_rows(dots, qv, hd, gs, k32_.data() + base + size_t(t * hd), hd);
                for (int64_t g = 0; g < gs; g++) scores[g * p.n_ctx + t] = dots[g] * kq_scale;
            }
            for (int64_t g = 0; g < gs; g++) {
                float* sc = scores + g * p.n_ctx;
                float mx = -INFINITY;
                for (int64_t t = 0; t < len; t++) mx = std::max(mx, sc[t]);
                const float inv = float(1.0 / kt.ggml_soft_max(sc, sc, len, mx));
                for (int64_t t = 0; t < len; t++) sc[t] = sc[t] * inv;
            }
            kt.ggml_wsum_rows(att_.data() + j * p.n_head * hd + h0 * hd, hd, scores, p.n_ctx, gs,
                              v32_.data() + base, hd, len, hd, lanes);
        }
    });
}

void Model::forward(const int32_t* tokens, const int32_t* pos, const int32_t* seq,
                    const uint8_t* want, int64_t n, float* logits, bool hidden) {
    const ModelParams& p = params;
    llama_ops_ = false;
    if (!p.group_f32)
        for (const Layer& L : layers)
            for (const GroupMatrix* g : {&L.gq, &L.gk, &L.gv, &L.go, &L.ggate, &L.gup, &L.gdown})
                llama_ops_ = llama_ops_ || !g->empty();
    // validate the batch: ids, slots, and positions that continue each sequence
    std::vector<int64_t> next(n_past_);
    for (int64_t j = 0; j < n; j++) {
        if (tokens[j] < 0 || tokens[j] >= p.n_vocab)
            throw std::invalid_argument("token id " + std::to_string(tokens[j]) + " out of range [0, " +
                                        std::to_string(p.n_vocab) + ")");
        if (seq[j] < 0 || seq[j] >= p.n_seq)
            throw std::invalid_argument("sequence " + std::to_string(seq[j]) + " out of range");
        if (pos[j] < 0 || pos[j] >= p.n_ctx)
            throw std::invalid_argument("position " + std::to_string(pos[j]) +
                                        " is outside the context of " + std::to_string(p.n_ctx));
        if (pos[j] > next[seq[j]])
            throw std::invalid_argument("position " + std::to_string(pos[j]) + " of sequence " +
                                        std::to_string(seq[j]) + " leaves a gap (next is " +
                                        std::to_string(next[seq[j]]) + ")");
        next[seq[j]] = std::max<int64_t>(next[seq[j]], pos[j] + 1);
    }
    reserve(n);
    const int64_t d = p.n_embd, hd = p.head_dim, qdim = p.n_head * hd, kvdim = p.n_head_kv * hd;
    float* x = x_.data();
    {
        OpTimer timer(prof_, Op::embed);
        for (int64_t j = 0; j < n; j++) {
            if (!tok_embd_g.empty()) kt.group_row(x + j * d, tok_embd_g, tokens[j]);
            else kt.float_row(x + j * d, tok_embd, tokens[j]);
        }
    }
    rope_angles(pos, n);

    for (int64_t l = 0; l < p.n_layer; l++) {
        const Layer& L = layers[size_t(l)];
        float* h = h_.data();
        rmsnorm(h, x, L.attn_norm.data(), n, d);
        {
            const TernaryMatrix* ws[3] = {&L.wq, &L.wk, &L.wv};
            const std::vector<float>* ns[3] = {&L.wq_in, &L.wk_in, &L.wv_in};
            const GroupMatrix* gs[3] = {&L.gq, &L.gk, &L.gv};
            float* ys[3] = {q_.data(), k_.data(), v_.data()};
            const int64_t ld[3] = {qdim, kvdim, kvdim};
            bitlinear_in(Op::matmul_qkv, ys, ld, ws, gs, ns, 3, h, d, n);
        }
        if (!L.attn_q_norm.empty()) {  // Qwen3: each head of q and k normalised before RoPE
            rmsnorm(q_.data(), q_.data(), L.attn_q_norm.data(), n * p.n_head, hd);
            rmsnorm(k_.data(), k_.data(), L.attn_k_norm.data(), n * p.n_head_kv, hd);
        }
        rope(q_.data(), k_.data(), n);
        store_kv(l, pos, seq, n);
        attention(l, pos, seq, n);
        const float* ain = att_.data();
        if (!L.attn_sub_norm.empty()) {
            rmsnorm(h, att_.data(), L.attn_sub_norm.data(), n, qdim);
            ain = h;
        }
        {
            const TernaryMatrix* ws[1] = {&L.wo};
            const std::vector<float>* ns[1] = {&L.wo_in};
            const GroupMatrix* gs[1] = {&L.go};
            float* ys[1] = {tmp_.data()};
            const int64_t ld[1] = {d};
            bitlinear_in(Op::matmul_out, ys, ld, ws, gs, ns, 1, ain, qdim, n);
        }
        {
            OpTimer timer(prof_, Op::residual);
            for (int64_t i = 0; i < n * d; i++) x[i] += tmp_[size_t(i)];
        }

        rmsnorm(h, x, L.ffn_norm.data(), n, d);
        {
            const TernaryMatrix* ws[2] = {&L.wgate, &L.wup};
            const std::vector<float>* ns[2] = {&L.wgate_in, &L.wup_in};
            const GroupMatrix* gs[2] = {&L.ggate, &L.gup};
            float* ys[2] = {gate_.data(), up_.data()};
            const int64_t ld[2] = {p.n_ff, p.n_ff};
            bitlinear_in(Op::matmul_gate_up, ys, ld, ws, gs, ns, 2, h, d, n);
        }
        float* g = gate_.data();
        activation(g, up_.data(), n * p.n_ff);
        const float* fin = g;
        if (!L.ffn_sub_norm.empty()) {
            rmsnorm(tmp_.data(), g, L.ffn_sub_norm.data(), n, p.n_ff);
            fin = tmp_.data();
        }
        {
            const TernaryMatrix* ws[1] = {&L.wdown};
            const std::vector<float>* ns[1] = {&L.wdown_in};
            const GroupMatrix* gs[1] = {&L.gdown};
            float* ys[1] = {h};
            const int64_t ld[1] = {d};
            bitlinear_in(Op::matmul_down, ys, ld, ws, gs, ns, 1, fin, p.n_ff, n);
        }
        {
            OpTimer timer(prof_, Op::residual);
            for (int64_t i = 0; i < n * d; i++) x[i] += h[i];
        }
    }
    for (int64_t j = 0; j < n; j++) n_past_[seq[j]] = std::max<int64_t>(n_past_[seq[j]], pos[j] + 1);

    // head on the wanted rows only
    std::vector<int64_t> rows;
    for (int64_t j = 0; j < n; j++)
        if (want[j]) rows.push_back(j);
    const int64_t nw = int64_t(rows.size());
    if (nw == 0) return;
    std::vector<float> sel(size_t(nw * d)), normed(size_t(nw * d));
    for (int64_t i = 0; i < nw; i++) std::memcpy(&sel[size_t(i * d)], x + rows[size_t(i)] * d, size_t(d) * 4);
    if (hidden) {  // embeddings: the final-norm hidden states, no head
        rmsnorm(logits, sel.data(), output_norm.data(), nw, d);
        return;
    }
    rmsnorm(normed.data(), sel.data(), output_norm.data(), nw, d);
    OpTimer timer(prof_, Op::head);
    if (!output_g.empty()) {
        group_linear(logits, output_g.m, output_g, normed.data(), d, nw, 64);
        return;
    }
    if (output.type == FloatType::q6_k && q6_k_int_head) {
        // the integer path: each wanted row quantized to q8_K once, then exact int32
        // sums per super-block (kernels.h)
        const int64_t ldq = d / kQ6KBlock * kQ8KBlockBytes;
        q8k_.resize(size_t(nw * ldq));
        kt.quantize_q8_k(q8k_.data(), ldq, normed.data(), d, nw, d);
        pool_->parallel_for(output.m, 64, [&](int64_t b, int64_t e) {
            kt.matmul_q6_k_q8_k(logits, output.m, output, q8k_.data(), ldq, nw, b, e);
        });
        return;
    }
    float_matmul_fn fn = kt.float_matmul[int(output.type)];
    pool_->parallel_for(output.m, 64, [&](int64_t b, int64_t e) {
        fn(logits, output.m, output, normed.data(), d, nw, b, e);
    });
}

}  // namespace tribit
