// Python bindings for the native model: built tensor by tensor by the Python
// loader (tribit.model.model's load), then run with llama.cpp-style batches.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <tuple>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/model.h"

namespace nb = nanobind;
using namespace tribit;

namespace {

template <typename T>
using Arr1 = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
template <typename T>
using Arr2 = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// The native model plus the Python objects that own zero-copy float weights.
struct PyModel {
    std::unique_ptr<Model> model;
    std::vector<nb::object> keep;
};

std::vector<float> copy_vec(Arr1<const float> a, int64_t expect, const char* what) {
    if (int64_t(a.shape(0)) != expect)
        throw nb::value_error((std::string(what) + ": expected " + std::to_string(expect) +
                               " values, got " + std::to_string(a.shape(0))).c_str());
    return std::vector<float>(a.data(), a.data() + a.shape(0));
}

// A layer's ternary projections. The names are the GGUF tensor suffixes under blk.N. of
// tribit.formats.keys.PROJECTIONS, the one table of tensor names: the loader passes them
// from there to set_ternary, and a test checks this table (exposed as
// NativeModel.projections) against it, shapes included.
enum class Width { embd, q, kv, ff };
struct ProjectionSlot {
    const char* name;
    TernaryMatrix Layer::*dst;
    GroupMatrix Layer::*gdst;  // the slot of a Q2_0 / Q1_0 projection
    Width rows, cols;  // (M, K) of the matrix
    std::vector<float> Layer::*norm_in;  // its optional input norm (cols wide)
};
constexpr ProjectionSlot kProjections[] = {
    {"attn_q", &Layer::wq, &Layer::gq, Width::q, Width::embd, &Layer::wq_in},
    {"attn_k", &Layer::wk, &Layer::gk, Width::kv, Width::embd, &Layer::wk_in},
    {"attn_v", &Layer::wv, &Layer::gv, Width::kv, Width::embd, &Layer::wv_in},
    {"attn_output", &Layer::wo, &Layer::go, Width::embd, Width::q, &Layer::wo_in},
    {"ffn_gate", &Layer::wgate, &Layer::ggate, Width::ff, Width::embd, &Layer::wgate_in},
    {"ffn_up", &Layer::wup, &Layer::gup, Width::ff, Width::embd, &Layer::wup_in},
    {"ffn_down", &Layer::wdown, &Layer::gdown, Width::embd, Width::ff, &Layer::wdown_in},
};

const char* width_name(Width w) {
    switch (w) {
        case Width::embd: return "embd";
        case Width::q: return "q";
        case Width::kv: return "kv";
        case Width::ff: return "ff";
    }
    return "?";
}

int64_t width_of(const ModelParams& p, Width w) {
    switch (w) {
        case Width::embd: return p.n_embd;
        case Width::q: return p.n_head * p.head_dim;
        case Width::kv: return p.n_head_kv * p.head_dim;
        case Width::ff: return p.n_ff;
    }
    return 0;
}

const ProjectionSlot& projection(const std::string& name) {
    for (const ProjectionSlot& s : kProjections)
        if (name == s.name) return s;
    throw nb::value_error(("unknown projection " + name).c_str());
}

bool is_group_type(const std::string& qtype) { return qtype == "q2_0" || qtype == "q1_0"; }

// A Q2_0 / Q1_0 matrix of ggml rows (m x k / block * 18 bytes) packed into the kernels' layout.
GroupMatrix make_group(nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> a, const std::string& qtype,
                       int64_t m, int64_t k) {
    const GroupType gt = parse_group_type(qtype);
    const int64_t block = group_block(gt);
    if (k % block || int64_t(a.nbytes()) != m * (k / block) * 18)
        throw nb::value_error((qtype + " weight: size does not match its shape").c_str());
    const uint8_t* data = static_cast<const uint8_t*>(a.data());
    nb::gil_scoped_release rel;
    return pack_group(data, gt, m, k);
}

FloatMatrix make_float(nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> a, const std::string& qtype,
                       int64_t m, int64_t k) {
    FloatMatrix w;
    w.type = parse_float_type(qtype);  // invalid_argument -> ValueError
    w.m = m;
    w.k = k;
    w.row_bytes = float_row_bytes(w.type, k);
    if (w.row_bytes < 0 || int64_t(a.nbytes()) != m * w.row_bytes)
        throw nb::value_error("float weight: size does not match its shape and type");
    w.data = static_cast<const uint8_t*>(a.data());
    return w;
}

}  // namespace

void bind_model(nb::module_& m) {
    nb::class_<PyModel>(m, "NativeModel")
        .def("__init__", [](PyModel* self, int64_t n_embd, int64_t n_ff, int64_t n_layer,
                            int64_t n_head, int64_t n_head_kv, int64_t head_dim, int64_t n_rot,
                            int64_t n_vocab, int64_t n_ctx, int64_t n_seq, float rope_theta,
                            float norm_eps, bool rope_neox, bool act_relu2, bool kv_f16,
                            int n_threads, std::optional<std::string> isa, bool group_f32) {
            ModelParams p;
            p.n_embd = n_embd; p.n_ff = n_ff; p.n_layer = n_layer; p.n_head = n_head;
            p.n_head_kv = n_head_kv; p.head_dim = head_dim; p.n_rot = n_rot; p.n_vocab = n_vocab;
            p.n_ctx = n_ctx; p.n_seq = n_seq; p.rope_theta = rope_theta; p.norm_eps = norm_eps;
            p.rope_neox = rope_neox; p.act_relu2 = act_relu2; p.kv_f16 = kv_f16;
            p.n_threads = n_threads;
            p.group_f32 = group_f32;
            const KernelTable& kt = kernels_named(isa);  // invalid_argument -> ValueError
            std::unique_ptr<Model> model;
            try {
                model = std::make_unique<Model>(p, kt);
            } catch (const std::invalid_argument& e) {
                throw nb::value_error(e.what());
            } catch (const std::length_error& e) {
                throw nb::value_error(e.what());
            }  // runtime_error (threads, memory) -> RuntimeError, bad_alloc -> MemoryError
            new (self) PyModel();
            self->model = std::move(model);
        }, nb::arg("n_embd"), nb::arg("n_ff"), nb::arg("n_layer"), nb::arg("n_head"),
           nb::arg("n_head_kv"), nb::arg("head_dim"), nb::arg("n_rot"), nb::arg("n_vocab"),
           nb::arg("n_ctx"), nb::arg("n_seq"), nb::arg("rope_theta"), nb::arg("norm_eps"),
           nb::arg("rope_neox"), nb::arg("act_relu2"), nb::arg("kv_f16"), nb::arg("n_threads"),
           nb::arg("isa") = nb::none(), nb::arg("group_f32") = false)
        .def("set_norms", [](PyModel& s, int64_t l, Arr1<const float> attn_norm,
                             std::optional<Arr1<const float>> attn_sub_norm, Arr1<const float> ffn_norm,
                             std::optional<Arr1<const float>> ffn_sub_norm,
                             std::optional<Arr1<const float>> attn_q_norm,
                             std::optional<Arr1<const float>> attn_k_norm) {
            Model& M = *s.model;
            Layer& L = M.layers.at(size_t(l));
            const ModelParams& p = M.params;
            L.attn_norm = copy_vec(attn_norm, p.n_embd, "attn_norm");
            L.ffn_norm = copy_vec(ffn_norm, p.n_embd, "ffn_norm");
            L.attn_sub_norm = attn_sub_norm ? copy_vec(*attn_sub_norm, p.n_head * p.head_dim, "attn_sub_norm")
                                            : std::vector<float>();
            L.ffn_sub_norm = ffn_sub_norm ? copy_vec(*ffn_sub_norm, p.n_ff, "ffn_sub_norm") : std::vector<float>();
            if (bool(attn_q_norm) != bool(attn_k_norm))
                throw nb::value_error("attn_q_norm and attn_k_norm come together");
            L.attn_q_norm = attn_q_norm ? copy_vec(*attn_q_norm, p.head_dim, "attn_q_norm") : std::vector<float>();
            L.attn_k_norm = attn_k_norm ? copy_vec(*attn_k_norm, p.head_dim, "attn_k_norm") : std::vector<float>();
        }, nb::arg("l"), nb::arg("attn_norm"), nb::arg("attn_sub_norm").none(), nb::arg("ffn_norm"),
           nb::arg("ffn_sub_norm").none(), nb::arg("attn_q_norm").none() = nb::none(),
           nb::arg("attn_k_norm").none() = nb::none())
        .def("set_input_norm", [](PyModel& s, int64_t l, const std::string& which, Arr1<const float> w) {
            // the optional RMSNorm of projection `which`'s input (as wide as its K)
            Model& M = *s.model;
            Layer& L = M.layers.at(size_t(l));
            const ProjectionSlot& slot = projection(which);
            L.*slot.norm_in = copy_vec(w, width_of(M.params, slot.cols), (which + "_norm_in").c_str());
        })
        .def("set_ternary", [](PyModel& s, int64_t l, const std::string& which, Arr2<const int8_t> t,
                               float gamma) {
            Model& M = *s.model;
            Layer& L = M.layers.at(size_t(l));
            const ProjectionSlot& slot = projection(which);
            TernaryMatrix* dst = &(L.*slot.dst);
            const int64_t em = width_of(M.params, slot.rows), ek = width_of(M.params, slot.cols);
            if (int64_t(t.shape(0)) != em || int64_t(t.shape(1)) != ek)
                throw nb::value_error(("projection " + which + " has shape (" + std::to_string(t.shape(0)) +
                                       ", " + std::to_string(t.shape(1)) + "), expected (" +
                                       std::to_string(em) + ", " + std::to_string(ek) + ")").c_str());
            nb::gil_scoped_release rel;
            *dst = pack_ternary(t.data(), em, ek, gamma);
        })
        .def("set_group", [](PyModel& s, int64_t l, const std::string& which,
                             nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> raw, const std::string& qtype) {
            // a Q2_0 / Q1_0 projection: the ggml rows, packed here (kernels.h)
            Model& M = *s.model;
            Layer& L = M.layers.at(size_t(l));
            const ProjectionSlot& slot = projection(which);
            L.*slot.gdst = make_group(raw, qtype, width_of(M.params, slot.rows), width_of(M.params, slot.cols));
        })
        .def_prop_ro_static("projections", [](nb::handle) {
            // (GGUF suffix, rows, cols) of every projection, in kProjections' order
            std::vector<std::tuple<std::string, std::string, std::string>> out;
            for (const ProjectionSlot& s : kProjections)
                out.emplace_back(s.name, width_name(s.rows), width_name(s.cols));
            return out;
        })
        .def("set_embedding", [](PyModel& s, nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> a,
                                 const std::string& qtype, bool tied) {
            Model& M = *s.model;
            if (is_group_type(qtype)) {
                M.tok_embd_g = make_group(a, qtype, M.params.n_vocab, M.params.n_embd);
                if (tied) M.output_g = M.tok_embd_g;
                return;
            }
            M.tok_embd = make_float(a, qtype, M.params.n_vocab, M.params.n_embd);
            if (tied) M.output = M.tok_embd;
            s.keep.push_back(nb::find(a));
        })
        .def("set_output", [](PyModel& s, nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> a,
                              const std::string& qtype) {
            Model& M = *s.model;
            if (is_group_type(qtype)) {
                M.output_g = make_group(a, qtype, M.params.n_vocab, M.params.n_embd);
                M.output = FloatMatrix();
                return;
            }
            M.output_g = GroupMatrix();
            M.output = make_float(a, qtype, M.params.n_vocab, M.params.n_embd);
            s.keep.push_back(nb::find(a));
        })
        .def("set_output_norm", [](PyModel& s, Arr1<const float> a) {
            s.model->output_norm = copy_vec(a, s.model->params.n_embd, "output_norm");
        })
        .def("forward", [](PyModel& s, Arr1<const int32_t> tokens, Arr1<const int32_t> pos,
                           Arr1<const int32_t> seq, Arr1<const uint8_t> want, bool hidden) {
            // logits (rows x n_vocab), or with `hidden` the final-norm hidden states
            // (rows x n_embd) of the wanted rows
            Model& M = *s.model;
            int64_t n = tokens.shape(0);
            if (pos.shape(0) != size_t(n) || seq.shape(0) != size_t(n) || want.shape(0) != size_t(n))
                throw nb::value_error("tokens, pos, seq and want must have the same length");
            int64_t nw = 0;
            for (int64_t j = 0; j < n; j++) nw += want.data()[j] ? 1 : 0;
            size_t shape[2] = {size_t(nw), size_t(hidden ? M.params.n_embd : M.params.n_vocab)};
            size_t n_out;
            if (__builtin_mul_overflow(shape[0], shape[1], &n_out) || n_out > (SIZE_MAX >> 3))
                throw nb::value_error("the logits of this batch do not fit in memory");
            float* out = new (std::nothrow) float[std::max<size_t>(n_out, 1)];
            if (!out)
                throw std::runtime_error("cannot allocate the logits: " + std::to_string(n_out * 4) +
                                         " bytes");
            nb::capsule owner(out, [](void* p) noexcept { delete[] static_cast<float*>(p); });
            try {
                nb::gil_scoped_release rel;
                M.forward(tokens.data(), pos.data(), seq.data(), want.data(), n, out, hidden);
            } catch (const std::invalid_argument& e) {
                throw nb::value_error(e.what());
            } catch (const std::bad_alloc&) {
                throw std::runtime_error("out of memory for a batch of " + std::to_string(n) + " tokens");
            }
            return nb::ndarray<nb::numpy, float, nb::ndim<2>>(out, 2, shape, owner);
        }, nb::arg("tokens"), nb::arg("pos"), nb::arg("seq"), nb::arg("want"), nb::arg("hidden") = false)
        .def("reset", [](PyModel& s, int64_t seq) { s.model->reset(seq); })
        .def("trim", [](PyModel& s, int64_t seq, int64_t n) { s.model->trim(seq, n); })
        .def("n_past", [](PyModel& s, int64_t seq) { return s.model->n_past(seq); })
        .def_prop_ro("kv_bytes", [](PyModel& s) { return s.model->kv_bytes(); })
        .def_prop_ro("weight_bytes", [](PyModel& s) { return s.model->weight_bytes(); })
        .def_prop_ro("isa", [](PyModel& s) { return std::string(isa_name(s.model->kt.isa)); })
        .def_prop_rw("q6_k_int_head", [](PyModel& s) { return s.model->q6_k_int_head; },
                     [](PyModel& s, bool v) { s.model->q6_k_int_head = v; },
                     "A q6_k head's integer path (q8_K activations); False: the float kernel.")
        .def("profile", [](PyModel& s) {
            // op -> (seconds, calls), wall time since the last reset_profile()
            std::map<std::string, std::tuple<double, int64_t>> out;
            const OpProfile& p = s.model->profile();
            for (int i = 0; i < int(Op::count); i++)
                out[op_name(Op(i))] = {p.seconds[i], p.calls[i]};
            return out;
        })
        .def("reset_profile", [](PyModel& s) { s.model->reset_profile(); });
}
