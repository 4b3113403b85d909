// llama.cpp's float ops (kernels.h) compiled with this ISA's flags: the portable source of
// ggml_ops.h, vectorized by the compiler; the same bits as every other ISA's copy.
#include "ggml_ops.h"

namespace tribit {

void fill_ggml_avx2(KernelTable& t) {
    t.ggml_dot_rows = ggml_dot_rows_impl;
    t.ggml_wsum_rows = ggml_wsum_rows_impl;
    t.ggml_soft_max = ggml_soft_max_impl;
    t.ggml_swiglu = ggml_swiglu_impl;
}

}  // namespace tribit
