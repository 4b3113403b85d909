// Python bindings for CPU introspection and per-kernel entry points (tests,
// benchmarks). Every call that computes releases the GIL.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu.h"
#include "kernels.h"
#include "threadpool.h"

namespace nb = nanobind;
using namespace tribit;

namespace {

template <typename T>
using Arr2 = nb::ndarray<T, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
template <typename T>
using Arr1 = nb::ndarray<T, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

// kernels_named's std::invalid_argument (unknown ISA, or not runnable here) reaches
// Python as ValueError.
const KernelTable& table(const std::optional<std::string>& isa) { return kernels_named(isa); }

ThreadPool& pool(int n_threads) {
    static std::mutex mu;
    static std::map<int, std::unique_ptr<ThreadPool>> pools;
    std::lock_guard<std::mutex> lk(mu);
    n_threads = std::max(1, n_threads);
    auto& p = pools[n_threads];
    if (!p) p = std::make_unique<ThreadPool>(n_threads);
    return *p;
}

template <typename T>
nb::ndarray<nb::numpy, T> owned(std::vector<size_t> shape) {
    size_t n = 1;
    for (size_t d : shape) n *= d;
    T* data = new T[std::max<size_t>(n, 1)]();
    nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
    return nb::ndarray<nb::numpy, T>(data, shape.size(), shape.data(), owner);
}

// dot(a, b) and y + a * x through one ISA's kernel; B / X: float, or uint16 (f16 bits)
template <typename B>
void bind_dot(nb::module_& m, const char* name, double (*KernelTable::*fn)(const double*, const B*, int64_t)) {
    const std::string msg = std::string(name) + ": lengths differ";
    m.def(name, [fn, msg](Arr1<const float> a, Arr1<const B> b, std::optional<std::string> isa) {
        if (a.shape(0) != b.shape(0)) throw nb::value_error(msg.c_str());
        std::vector<double> wide(a.data(), a.data() + a.shape(0));  // as attention widens q
        return (table(isa).*fn)(wide.data(), b.data(), int64_t(a.shape(0)));
    }, nb::arg("a"), nb::arg("b"), nb::arg("isa") = nb::none());
}

template <typename X>
void bind_axpy(nb::module_& m, const char* name, void (*KernelTable::*fn)(double*, double, const X*, int64_t)) {
    const std::string msg = std::string(name) + ": lengths differ";
    m.def(name, [fn, msg](Arr1<const double> y, double a, Arr1<const X> x, std::optional<std::string> isa) {
        if (y.shape(0) != x.shape(0)) throw nb::value_error(msg.c_str());
        auto out = owned<double>({y.shape(0)});
        std::memcpy(out.data(), y.data(), y.shape(0) * 8);
        (table(isa).*fn)(out.data(), a, x.data(), int64_t(x.shape(0)));
        return out;
    }, nb::arg("y"), nb::arg("a"), nb::arg("x"), nb::arg("isa") = nb::none(), "y + a * x (a new array)");
}

// dot_rows: the rows of `a` against one vector, as attention calls it for a GQA
// group (a widened to double as attention widens q); wsum_rows: attention's
// weighted sum of value rows
template <typename B>
void bind_dot_rows(nb::module_& m, const char* name,
                   void (*KernelTable::*fn)(double*, int64_t, const double*, int64_t, int64_t, const B*, int64_t,
                                            int64_t, int64_t)) {
    const std::string msg = std::string(name) + ": lengths differ";
    m.def(name, [fn, msg](Arr2<const float> a, Arr2<const B> b, std::optional<std::string> isa) {
        // a (rows, n), b (len, n) -> (rows, len)
        if (a.shape(1) != b.shape(1)) throw nb::value_error(msg.c_str());
        const int64_t rows = int64_t(a.shape(0)), n = int64_t(a.shape(1)), len = int64_t(b.shape(0));
        std::vector<double> wide(a.data(), a.data() + rows * n);
        auto out = owned<double>({size_t(rows), size_t(len)});
        (table(isa).*fn)(out.data(), len, wide.data(), n, rows, b.data(), n, len, n);
        return out;
    }, nb::arg("a"), nb::arg("b"), nb::arg("isa") = nb::none(), "dot of each row of a with each row of b");
}

template <typename X>
void bind_wsum_rows(nb::module_& m, const char* name,
                    void (*KernelTable::*fn)(double*, int64_t, const double*, int64_t, int64_t,
                                             const X*, int64_t, int64_t, int64_t)) {
    const std::string msg = std::string(name) + ": shapes differ";
    m.def(name, [fn, msg](Arr2<const double> coef, Arr2<const X> x, std::optional<std::string> isa) {
        // coef (rows, len), x (len, n) -> (rows, n)
        if (coef.shape(1) != x.shape(0)) throw nb::value_error(msg.c_str());
        const int64_t rows = int64_t(coef.shape(0)), len = int64_t(x.shape(0)), n = int64_t(x.shape(1));
        auto out = owned<double>({size_t(rows), size_t(n)});
        (table(isa).*fn)(out.data(), n, coef.data(), len, rows, x.data(), n, len, n);
        return out;
    }, nb::arg("coef"), nb::arg("x"), nb::arg("isa") = nb::none(),
       "sum over t of coef[g, t] * x[t] for each row g, in t order");
}

// A float matrix plus the Python object that owns its bytes.
struct PyFloatMatrix {
    FloatMatrix w;
    nb::object keep;
};

}  // namespace

void bind_kernels(nb::module_& m) {
    m.def("cpu_info", [] {
        const CpuInfo& c = cpu_info();
        nb::dict d;
        d["name"] = c.name;
        d["features"] = c.features();
        return d;
    }, "The CPU's name and the features tribit looks for.");
    m.def("selected_isa", [] { return std::string(isa_name(kernels().isa)); },
          "The ISA variant used by default (TRIBIT_ISA overrides).");
    m.def("compiled_isas", [] {
        std::vector<std::string> v;
        for (int i = 0; i < kNumIsas; i++) if (isa_compiled(Isa(i))) v.push_back(isa_name(Isa(i)));
        return v;
    });
    m.def("runnable_isas", [] {
        std::vector<std::string> v;
        for (int i = 0; i < kNumIsas; i++) if (isa_runnable(Isa(i))) v.push_back(isa_name(Isa(i)));
        return v;
    });
    m.def("kernel_names", [](std::optional<std::string> isa) {
        const KernelTable& t = table(isa);
        std::map<std::string, std::string> d;
        d["quantize_act"] = t.quantize_act_name;
        d["ternary_gemv"] = t.ternary_gemv_name;
        d["ternary_gemm"] = t.ternary_gemm_name;
        for (int i = 0; i < kNumFloatTypes; i++)
            d[std::string("matmul_") + float_type_name(FloatType(i))] = t.float_matmul_name[i];
        d["quantize_q8_0"] = t.quantize_q8_0_name;
        for (int i = 0; i < kNumGroupTypes; i++)
            d[std::string("matmul_") + group_type_name(GroupType(i)) + "_q8_0"] = t.group_matmul_name[i];
        d["matmul_group_f32"] = t.group_matmul_f32_name;
        d["quantize_q8_k"] = t.quantize_q8_k_name;
        d["matmul_q6_k_q8_k"] = t.matmul_q6_k_q8_k_name;
        return d;
    }, nb::arg("isa") = nb::none());

    // attention's vector kernels, for the tests; *_f16 take the f16 operand as uint16
    // bits (separate names: an overload would accept uint16 converted to float)
    bind_dot<float>(m, "dot", &KernelTable::dot_f32);
    bind_dot<uint16_t>(m, "dot_f16", &KernelTable::dot_f16);
    bind_axpy<float>(m, "axpy", &KernelTable::axpy_f32);
    bind_axpy<uint16_t>(m, "axpy_f16", &KernelTable::axpy_f16);
    bind_dot_rows<float>(m, "dot_rows", &KernelTable::dot_rows_f32);
    bind_dot_rows<uint16_t>(m, "dot_rows_f16", &KernelTable::dot_rows_f16);
    bind_wsum_rows<float>(m, "wsum_rows", &KernelTable::wsum_rows_f32);
    bind_wsum_rows<uint16_t>(m, "wsum_rows_f16", &KernelTable::wsum_rows_f16);
    m.def("softmax_exp", [](Arr1<const double> x, double mx, std::optional<std::string> isa) {
        auto out = owned<double>({x.shape(0)});
        std::copy(x.data(), x.data() + x.shape(0), out.data());
        const double sum = table(isa).softmax_exp(out.data(), int64_t(x.shape(0)), mx);
        return nb::make_tuple(out, sum);
    }, nb::arg("x"), nb::arg("mx"), nb::arg("isa") = nb::none(),
       "(exp(x - mx), their sum in the kernels' order): softmax's exponentials");
    // llama.cpp's float ops (kernels.h), compared with ggml's own compiled functions in tests
    m.def("ggml_dot_rows", [](Arr2<const float> a, Arr1<const float> b, std::optional<std::string> isa) {
        if (a.shape(1) != b.shape(0)) throw nb::value_error("ggml_dot_rows: lengths differ");
        const int64_t rows = int64_t(a.shape(0)), n = int64_t(a.shape(1));
        auto out = owned<float>({size_t(rows)});
        table(isa).ggml_dot_rows(out.data(), a.data(), n, rows, b.data(), n);
        return out;
    }, nb::arg("a"), nb::arg("b"), nb::arg("isa") = nb::none(), "ggml_vec_dot_f32 of each row of a with b");
    m.def("ggml_wsum_rows", [](Arr2<const float> coef, Arr2<const float> x, int lanes, std::optional<std::string> isa) {
        if (coef.shape(1) != x.shape(0)) throw nb::value_error("ggml_wsum_rows: shapes differ");
        if (lanes != 16 && lanes != 64) throw nb::value_error("ggml_wsum_rows: lanes must be 16 or 64");
        const int64_t rows = int64_t(coef.shape(0)), len = int64_t(x.shape(0)), n = int64_t(x.shape(1));
        auto out = owned<float>({size_t(rows), size_t(n)});
        table(isa).ggml_wsum_rows(out.data(), n, coef.data(), len, rows, x.data(), n, len, n, lanes);
        return out;
    }, nb::arg("coef"), nb::arg("x"), nb::arg("lanes"), nb::arg("isa") = nb::none(),
       "sum over t of coef[g, t] * x[t] in ggml's order (lanes 64: one token, 16: a batch)");
    m.def("ggml_soft_max", [](Arr1<const float> x, float max, std::optional<std::string> isa) {
        auto out = owned<float>({x.shape(0)});
        const double sum = table(isa).ggml_soft_max(out.data(), x.data(), int64_t(x.shape(0)), max);
        return std::make_tuple(out, sum);
    }, nb::arg("x"), nb::arg("max"), nb::arg("isa") = nb::none(), "(exp(x - max), their sum) as ggml_vec_soft_max_f32");
    m.def("ggml_swiglu", [](Arr1<const float> x, Arr1<const float> g, std::optional<std::string> isa) {
        if (x.shape(0) != g.shape(0)) throw nb::value_error("ggml_swiglu: lengths differ");
        auto out = owned<float>({x.shape(0)});
        table(isa).ggml_swiglu(out.data(), x.data(), g.data(), int64_t(x.shape(0)));
        return out;
    }, nb::arg("x"), nb::arg("g"), nb::arg("isa") = nb::none(), "silu(x) * g as ggml_vec_swiglu_f32");

    m.def("quantize_act", [](Arr2<const float> x, std::optional<std::string> isa) {
        const KernelTable& t = table(isa);
        int64_t n = x.shape(0), k = x.shape(1);
        auto q = owned<int8_t>({size_t(n), size_t(k)});
        auto scale = owned<float>({size_t(n)});
        auto sum = owned<int32_t>({size_t(n)});
        {
            nb::gil_scoped_release rel;
            t.quantize_act(q.data(), k, scale.data(), sum.data(), x.data(), k, n, k);
        }
        return nb::make_tuple(q, scale, sum);
    }, nb::arg("x"), nb::arg("isa") = nb::none(),
       "Per-token int8 absmax quantization: (q, scale = 127/amax, sum_q).");

    nb::class_<TernaryMatrix>(m, "TernaryMatrix")
        .def_ro("m", &TernaryMatrix::m)
        .def_ro("k", &TernaryMatrix::k)
        .def_ro("k_pad", &TernaryMatrix::k_pad)
        .def_ro("gamma", &TernaryMatrix::gamma)
        .def_prop_ro("nbytes", [](const TernaryMatrix& w) { return w.m * w.row_bytes; });

    m.def("pack_ternary", [](Arr2<const int8_t> t, float gamma) {
        int64_t rows = t.shape(0), k = t.shape(1);
        for (int64_t i = 0; i < rows * k; i++)
            if (t.data()[i] < -1 || t.data()[i] > 1)
                throw nb::value_error("pack_ternary: values must be in {-1, 0, 1}");
        nb::gil_scoped_release rel;
        return pack_ternary(t.data(), rows, k, gamma);
    }, nb::arg("t"), nb::arg("gamma"), "Pack int8 ternary (m, k) into the kernels' layout.");

    m.def("ternary_matmul", [](const TernaryMatrix& w, Arr2<const int8_t> q, Arr1<const float> scale,
                               Arr1<const int32_t> sum_q, std::optional<std::string> isa,
                               const std::string& kind, int n_threads) {
        const KernelTable& t = table(isa);
        int64_t n = q.shape(0);
        if (int64_t(q.shape(1)) != w.k) throw nb::value_error("ternary_matmul: q has the wrong number of columns");
        if (scale.shape(0) != size_t(n) || sum_q.shape(0) != size_t(n))
            throw nb::value_error("ternary_matmul: scale and sum_q need one entry per token");
        ternary_matmul_fn fn = kind == "gemv" ? t.ternary_gemv
                             : kind == "gemm" ? t.ternary_gemm
                             : kind == "auto" ? (n == 1 ? t.ternary_gemv : t.ternary_gemm)
                             : nullptr;
        if (!fn) throw nb::value_error("kind must be 'auto', 'gemv' or 'gemm'");
        auto y = owned<float>({size_t(n), size_t(w.m)});
        {
            nb::gil_scoped_release rel;
            // the kernels read activations padded with zeros to k_pad
            std::vector<int8_t> qp(size_t(n * w.k_pad), 0);
            for (int64_t j = 0; j < n; j++) std::memcpy(&qp[j * w.k_pad], q.data() + j * w.k, size_t(w.k));
            float* yd = y.data();
            pool(n_threads).parallel_for(w.m, 16, [&](int64_t b, int64_t e) {
                fn(yd, w.m, w, qp.data(), w.k_pad, scale.data(), sum_q.data(), n, b, e);
            });
        }
        return y;
    }, nb::arg("w"), nb::arg("q"), nb::arg("scale"), nb::arg("sum_q"), nb::arg("isa") = nb::none(),
       nb::arg("kind") = "auto", nb::arg("n_threads") = 1,
       "y (n, m) = float(sum T*q) * (gamma / scale), exact integer sums.");

    nb::class_<PyFloatMatrix>(m, "FloatMatrix")
        .def("__init__", [](PyFloatMatrix* self, nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu> a,
                            const std::string& qtype, int64_t rows, int64_t k) {
            FloatType ft = parse_float_type(qtype);
            int64_t rb = float_row_bytes(ft, k);
            if (rb < 0) throw nb::value_error("FloatMatrix: k is invalid for this type");
            if (int64_t(a.nbytes()) != rows * rb)
                throw nb::value_error("FloatMatrix: array size does not match (rows, k, type)");
            new (self) PyFloatMatrix();
            self->w.m = rows;
            self->w.k = k;
            self->w.type = ft;
            self->w.data = static_cast<const uint8_t*>(a.data());
            self->w.row_bytes = rb;
            self->keep = nb::find(a);
        }, nb::arg("array"), nb::arg("qtype"), nb::arg("m"), nb::arg("k"))
        .def_prop_ro("m", [](const PyFloatMatrix& f) { return f.w.m; })
        .def_prop_ro("k", [](const PyFloatMatrix& f) { return f.w.k; });

    m.def("float_matmul", [](const PyFloatMatrix& fw, Arr2<const float> x, std::optional<std::string> isa,
                             int n_threads) {
        const KernelTable& t = table(isa);
        const FloatMatrix& w = fw.w;
        if (int64_t(x.shape(1)) != w.k) throw nb::value_error("float_matmul: x has the wrong number of columns");
        int64_t n = x.shape(0);
        auto y = owned<float>({size_t(n), size_t(w.m)});
        {
            nb::gil_scoped_release rel;
            float_matmul_fn fn = t.float_matmul[int(w.type)];
            float* yd = y.data();
            pool(n_threads).parallel_for(w.m, 64, [&](int64_t b, int64_t e) {
                fn(yd, w.m, w, x.data(), w.k, n, b, e);
            });
        }
        return y;
    }, nb::arg("w"), nb::arg("x"), nb::arg("isa") = nb::none(), nb::arg("n_threads") = 1);

    m.def("quantize_q8_k", [](Arr2<const float> x, std::optional<std::string> isa) {
        const KernelTable& t = table(isa);
        const int64_t n = int64_t(x.shape(0)), k = int64_t(x.shape(1));
        if (k % kQ6KBlock) throw nb::value_error(("quantize_q8_k: k must be a multiple of 256, got " + std::to_string(k)).c_str());
        const int64_t ldq = k / kQ6KBlock * kQ8KBlockBytes;
        auto q = owned<uint8_t>({size_t(n), size_t(ldq)});
        nb::gil_scoped_release rel;
        t.quantize_q8_k(q.data(), ldq, x.data(), k, n, k);
        return q;
    }, nb::arg("x"), nb::arg("isa") = nb::none(),
       "float32 (n, k) -> q8_K bytes (n, k / 256 * 292): llama.cpp's block_q8_K.");

    m.def("matmul_q6_k_q8_k", [](const PyFloatMatrix& fw, Arr2<const uint8_t> q, std::optional<std::string> isa,
                                 int n_threads) {
        const KernelTable& t = table(isa);
        const FloatMatrix& w = fw.w;
        if (w.type != FloatType::q6_k) throw nb::value_error("matmul_q6_k_q8_k: w must be q6_k");
        const int64_t ldq = w.k / kQ6KBlock * kQ8KBlockBytes;
        if (int64_t(q.shape(1)) != ldq) throw nb::value_error("matmul_q6_k_q8_k: q has the wrong number of bytes per token");
        const int64_t n = int64_t(q.shape(0));
        auto y = owned<float>({size_t(n), size_t(w.m)});
        {
            nb::gil_scoped_release rel;
            float* yd = y.data();
            pool(n_threads).parallel_for(w.m, 64, [&](int64_t b, int64_t e) {
                t.matmul_q6_k_q8_k(yd, w.m, w, q.data(), ldq, n, b, e);
            });
        }
        return y;
    }, nb::arg("w"), nb::arg("q"), nb::arg("isa") = nb::none(), nb::arg("n_threads") = 1,
       "The q6_k head's integer path: Q6_K (m, k) times q8_K activations -> y (n, m).");

    m.def("float_rows", [](const PyFloatMatrix& fw, Arr1<const int64_t> rows, std::optional<std::string> isa) {
        // the embedding lookup: rows of a float matrix as float32
        const KernelTable& t = table(isa);
        const FloatMatrix& w = fw.w;
        const int64_t n = int64_t(rows.shape(0));
        for (int64_t j = 0; j < n; j++)
            if (rows.data()[j] < 0 || rows.data()[j] >= w.m) throw nb::value_error("float_rows: row out of range");
        auto out = owned<float>({size_t(n), size_t(w.k)});
        nb::gil_scoped_release rel;
        for (int64_t j = 0; j < n; j++) t.float_row(out.data() + j * w.k, w, rows.data()[j]);
        return out;
    }, nb::arg("w"), nb::arg("rows"), nb::arg("isa") = nb::none());

    // ---- group-scaled low-bit weights (Q2_0, Q1_0): kernels.h, docs/FORMATS.md 3.11
    nb::class_<GroupMatrix>(m, "GroupMatrix")
        .def_ro("m", &GroupMatrix::m)
        .def_ro("k", &GroupMatrix::k)
        .def_prop_ro("qtype", [](const GroupMatrix& w) { return std::string(group_type_name(w.type)); })
        .def_prop_ro("nbytes", [](const GroupMatrix& w) { return w.m_pad / kGroupRows * w.group_bytes; });

    m.def("pack_group", [](Arr2<const uint8_t> raw, const std::string& qtype, int64_t rows, int64_t k) {
        const GroupType gt = parse_group_type(qtype);  // invalid_argument -> ValueError
        const int64_t block = group_block(gt);
        if (rows <= 0 || k <= 0 || k % block)
            throw nb::value_error(("pack_group: " + qtype + " needs k a positive multiple of " +
                                   std::to_string(block)).c_str());
        if (int64_t(raw.shape(0)) != rows || int64_t(raw.shape(1)) != k / block * 18)
            throw nb::value_error("pack_group: array shape does not match (rows, k, type)");
        nb::gil_scoped_release rel;
        return pack_group(raw.data(), gt, rows, k);
    }, nb::arg("raw"), nb::arg("qtype"), nb::arg("m"), nb::arg("k"),
       "ggml Q2_0 / Q1_0 rows (m, k / block * 18 bytes) into the kernels' interleaved layout.");

    m.def("quantize_q8_0", [](Arr2<const float> x, std::optional<std::string> isa) {
        const KernelTable& t = table(isa);
        const int64_t n = x.shape(0), k = x.shape(1);
        if (k % 32) throw nb::value_error("quantize_q8_0: k must be a multiple of 32");
        auto q = owned<int8_t>({size_t(n), size_t(k)});
        auto d = owned<float>({size_t(n), size_t(k / 32)});
        auto bs = owned<int32_t>({size_t(n), size_t(k / 32)});
        {
            nb::gil_scoped_release rel;
            t.quantize_q8_0(q.data(), d.data(), bs.data(), x.data(), k, n, k);
        }
        return nb::make_tuple(q, d, bs);
    }, nb::arg("x"), nb::arg("isa") = nb::none(),
       "Activations to Q8_0 blocks as llama.cpp's x86 quantize_row_q8_0: (q, d, block sums).");

    m.def("group_matmul", [](const GroupMatrix& w, Arr2<const int8_t> q, Arr2<const float> d,
                             Arr2<const int32_t> bsum, std::optional<std::string> isa, int n_threads) {
        const KernelTable& t = table(isa);
        const int64_t n = q.shape(0);
        if (int64_t(q.shape(1)) != w.k || int64_t(d.shape(0)) != n || int64_t(d.shape(1)) != w.k / 32 ||
            int64_t(bsum.shape(0)) != n || int64_t(bsum.shape(1)) != w.k / 32)
            throw nb::value_error("group_matmul: q (n, k), d and bsum (n, k / 32) do not match the matrix");
        auto y = owned<float>({size_t(n), size_t(w.m)});
        {
            nb::gil_scoped_release rel;
            group_matmul_fn fn = t.group_matmul[int(w.type)];
            float* yd = y.data();
            pool(n_threads).parallel_for(w.m, 16, [&](int64_t b, int64_t e) {
                fn(yd, w.m, w, q.data(), d.data(), bsum.data(), n, b, e);
            });
        }
        return y;
    }, nb::arg("w"), nb::arg("q"), nb::arg("d"), nb::arg("bsum"), nb::arg("isa") = nb::none(),
       nb::arg("n_threads") = 1, "Mode (a): y (n, m) with Q8_0 activations in ggml's order.");

    m.def("group_matmul_f32", [](const GroupMatrix& w, Arr2<const float> x, std::optional<std::string> isa,
                                 int n_threads) {
        const KernelTable& t = table(isa);
        const int64_t n = x.shape(0);
        if (int64_t(x.shape(1)) != w.k) throw nb::value_error("group_matmul_f32: x has the wrong number of columns");
        auto y = owned<float>({size_t(n), size_t(w.m)});
        {
            nb::gil_scoped_release rel;
            float* yd = y.data();
            pool(n_threads).parallel_for(w.m, 16, [&](int64_t b, int64_t e) {
                t.group_matmul_f32(yd, w.m, w, x.data(), w.k, n, b, e);
            });
        }
        return y;
    }, nb::arg("w"), nb::arg("x"), nb::arg("isa") = nb::none(), nb::arg("n_threads") = 1,
       "Mode (b): dequantized weights x float32 activations, summed in double.");

    m.def("group_rows", [](const GroupMatrix& w, Arr1<const int64_t> rows, std::optional<std::string> isa) {
        const KernelTable& t = table(isa);
        const int64_t n = int64_t(rows.shape(0));
        for (int64_t j = 0; j < n; j++)
            if (rows.data()[j] < 0 || rows.data()[j] >= w.m) throw nb::value_error("group_rows: row out of range");
        auto out = owned<float>({size_t(n), size_t(w.k)});
        nb::gil_scoped_release rel;
        for (int64_t j = 0; j < n; j++) t.group_row(out.data() + j * w.k, w, rows.data()[j]);
        return out;
    }, nb::arg("w"), nb::arg("rows"), nb::arg("isa") = nb::none());

    m.def("quantize_q6_k", [](Arr2<const float> x, int n_threads) {
        const int64_t rows = int64_t(x.shape(0)), k = int64_t(x.shape(1));
        const int64_t rb = float_row_bytes(FloatType::q6_k, k);
        if (rb < 0) throw nb::value_error(("quantize_q6_k: k must be a multiple of 256, got " + std::to_string(k)).c_str());
        auto out = owned<uint8_t>({size_t(rows), size_t(rb)});
        nb::gil_scoped_release rel;
        uint8_t* o = out.data();
        pool(n_threads).parallel_for(rows, 16, [&](int64_t b, int64_t e) { quantize_q6_k_rows(o, x.data(), k, b, e); });
        return out;
    }, nb::arg("x"), nb::arg("n_threads") = 1,
       "float32 (m, k) -> Q6_K bytes (m, k / 256 * 210), llama.cpp's reference quantizer.");

    m.def("probe_read_bandwidth", [](int64_t nbytes, int n_threads, int reps) {
        // Sum a buffer much larger than the last-level cache; the median of reps.
        nb::gil_scoped_release rel;
        int64_t n = nbytes / 8;
        std::vector<uint64_t> buf(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; i++) buf[i] = uint64_t(i);
        ThreadPool& p = pool(n_threads);
        std::vector<double> times;
        std::vector<uint64_t> sink(64 * 8, 0);
        for (int r = 0; r < reps + 1; r++) {
            auto t0 = std::chrono::steady_clock::now();
            p.run([&](int ith, int nth) {
                int64_t b = n * ith / nth, e = n * (ith + 1) / nth;
                uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                int64_t i = b;
                for (; i + 4 <= e; i += 4) { s0 += buf[i]; s1 += buf[i + 1]; s2 += buf[i + 2]; s3 += buf[i + 3]; }
                for (; i < e; i++) s0 += buf[i];
                sink[ith * 8] += s0 + s1 + s2 + s3;
            });
            auto t1 = std::chrono::steady_clock::now();
            if (r > 0) times.push_back(std::chrono::duration<double>(t1 - t0).count());
        }
        std::sort(times.begin(), times.end());
        double med = times[times.size() / 2];
        return double(n * 8) / med / 1e9;
    }, nb::arg("nbytes") = int64_t(256) << 20, nb::arg("n_threads") = 1, nb::arg("reps") = 5,
       "Memory read bandwidth in GB/s (median of reps).");

    m.def("probe_mac_peak", [](int n_threads, std::optional<std::string> isa, int64_t iters,
                               int reps) -> std::optional<double> {
        // Every thread runs the ISA's register-only GEMM instruction loop; GMAC/s of
        // all threads together, median of reps. None where the ISA has no probe.
        const KernelTable& t = table(isa);
        if (!t.mac_probe) return std::nullopt;
        nb::gil_scoped_release rel;
        ThreadPool& p = pool(n_threads);
        std::vector<double> rates;
        std::vector<int64_t> macs(size_t(p.n_threads()) * 8, 0);
        for (int r = 0; r < reps + 1; r++) {
            auto t0 = std::chrono::steady_clock::now();
            p.run([&](int ith, int) { macs[size_t(ith) * 8] = t.mac_probe(iters); });
            auto t1 = std::chrono::steady_clock::now();
            double total = 0;
            for (int i = 0; i < p.n_threads(); i++) total += double(macs[size_t(i) * 8]);
            if (r > 0) rates.push_back(total / std::chrono::duration<double>(t1 - t0).count() / 1e9);
        }
        std::sort(rates.begin(), rates.end());
        return rates[rates.size() / 2];
    }, nb::arg("n_threads") = 1, nb::arg("isa") = nb::none(), nb::arg("iters") = int64_t(1) << 22,
       nb::arg("reps") = 5,
       "Peak int8 multiply-accumulates per second (GMAC/s, all threads) of the instructions\n"
       "the ISA's ternary GEMM uses, from registers; None for ISAs without a probe.");
}
