// The Python module tribit._core. Each area binds itself in its own file.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

void bind_kernels(nb::module_& m);  // bind_kernels.cpp: CPU info, per-kernel entry points
void bind_model(nb::module_& m);    // bind_model.cpp: weights, KV cache, forward pass

NB_MODULE(_core, m) {
    m.doc() = "tribit native core: ternary kernels, thread pool, forward pass";
    bind_kernels(m);
    bind_model(m);
}
