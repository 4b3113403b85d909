// Runtime dispatch: one KernelTable per ISA, the best runnable one selected
// once (or the one TRIBIT_ISA names, failing loudly if it cannot run).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "cpu.h"
#include "kernels.h"

namespace tribit {

namespace {
constexpr const char* kIsaNames[kNumIsas] = {"generic", "avx2", "avx512", "neon"};
}  // namespace

const char* isa_name(Isa isa) {
    const int i = int(isa);
    return i >= 0 && i < kNumIsas ? kIsaNames[i] : "?";
}

std::string isa_names() {
    std::string s;
    for (int i = 0; i < kNumIsas; i++) s += (i ? ", " : "") + std::string(kIsaNames[i]);
    return s;
}

Isa parse_isa(const std::string& name) {
    for (int i = 0; i < kNumIsas; i++)
        if (name == kIsaNames[i]) return Isa(i);
    throw std::invalid_argument("unknown ISA '" + name + "' (" + isa_names() + ")");
}

bool isa_compiled(Isa isa) {
    switch (isa) {
        case Isa::generic: return true;
#if defined(TRIBIT_X86)
        case Isa::avx2:
        case Isa::avx512: return true;
#endif
#if defined(TRIBIT_ARM)
        case Isa::neon: return true;
#endif
        default: return false;
    }
}

bool isa_runnable(Isa isa) {
    if (!isa_compiled(isa)) return false;
    const CpuInfo& c = cpu_info();
    switch (isa) {
        case Isa::generic: return true;
        case Isa::avx2: return c.avx2 && c.fma && c.f16c;
        case Isa::avx512:
            return c.avx2 && c.fma && c.f16c && c.avx512f && c.avx512bw && c.avx512vl &&
                   c.avx512dq && c.avx512vnni;
        case Isa::neon: return c.neon;
    }
    return false;
}

static KernelTable make_table(Isa isa) {
    KernelTable t;
    // every variant starts from the generic one
    fill_ternary_generic(t);
    fill_float_generic(t);
    fill_attention_generic(t);
    fill_group_generic(t);
    fill_q6_k_q8_k_generic(t);
    fill_ggml_generic(t);
    switch (isa) {
        case Isa::generic: break;
#if defined(TRIBIT_X86)
        case Isa::avx512:  // AVX-512 VNNI ternary kernels over the AVX2 table
        case Isa::avx2:
            fill_ternary_avx2(t);
            fill_float_avx2(t);
            fill_attention_avx2(t);
            fill_group_avx2(t);
            fill_q6_k_q8_k_avx2(t);  // avx512 too: vpdpbusd needs a 32-bit multiply per sub-block scale
            fill_ggml_avx2(t);
            if (isa == Isa::avx512) {
                fill_ternary_avx512(t);
                fill_float_avx512(t);
                fill_attention_avx512(t);
                fill_group_avx512(t);
                fill_ggml_avx512(t);
            }
            break;
#endif
#if defined(TRIBIT_ARM)
        case Isa::neon:
            fill_ternary_neon(t);
            fill_float_neon(t);
            break;
#endif
        default: break;
    }
    t.isa = isa;
    return t;
}

const KernelTable* kernels_for(Isa isa) {
    static KernelTable tables[kNumIsas];
    static bool made[kNumIsas] = {};
    static bool init = [] {
        for (int i = 0; i < kNumIsas; i++) {
            if (isa_runnable(Isa(i))) {
                tables[i] = make_table(Isa(i));
                made[i] = true;
            }
        }
        return true;
    }();
    (void)init;
    int i = int(isa);
    return (i >= 0 && i < kNumIsas && made[i]) ? &tables[i] : nullptr;
}

static const KernelTable& select() {
    const char* env = std::getenv("TRIBIT_ISA");
    if (env && *env) {
        Isa isa;
        try {
            isa = parse_isa(env);
        } catch (const std::invalid_argument&) {
            throw std::runtime_error(std::string("TRIBIT_ISA=") + env + " is unknown (" +
                                     isa_names() + ")");
        }
        const KernelTable* t = kernels_for(isa);
        if (!t)
            throw std::runtime_error(std::string("TRIBIT_ISA=") + env +
                                     " cannot run on this CPU (or is not compiled in)");
        return *t;
    }
    // The best variant the CPU runs (cpuid + xgetbv, cpu.cpp). AVX-512 joined the
    // default once its tests and bit-identical logits had been checked on an
    // AVX-512 VNNI CPU (AMD Zen 4).
    for (Isa isa : {Isa::avx512, Isa::avx2, Isa::neon}) {
        if (const KernelTable* t = kernels_for(isa)) return *t;
    }
    return *kernels_for(Isa::generic);
}

const KernelTable& kernels() {
    static const KernelTable& t = select();
    return t;
}

const KernelTable& kernels_named(const std::optional<std::string>& isa) {
    if (!isa) return kernels();
    const KernelTable* t = kernels_for(parse_isa(*isa));
    if (!t) throw std::invalid_argument("ISA '" + *isa + "' cannot run on this CPU");
    return *t;
}

}  // namespace tribit
