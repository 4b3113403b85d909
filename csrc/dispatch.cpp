// Runtime dispatch: one KernelTable per ISA, the best runnable one selected
// once (or the one TRIBIT_ISA names, failing loudly if it cannot run).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu.h"
#include "kernels.h"

namespace tribit {

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::generic: return "generic";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
        case Isa::neon: return "neon";
    }
    return "?";
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
    fill_table_generic(t);  // every variant starts from the generic one
    switch (isa) {
        case Isa::generic: break;
#if defined(TRIBIT_X86)
        case Isa::avx2: fill_table_avx2(t); break;
        case Isa::avx512: fill_table_avx2(t); fill_table_avx512(t); break;
#endif
#if defined(TRIBIT_ARM)
        case Isa::neon: fill_table_neon(t); break;
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
        for (int i = 0; i < kNumIsas; i++) {
            if (std::strcmp(env, isa_name(Isa(i))) == 0) {
                const KernelTable* t = kernels_for(Isa(i));
                if (!t)
                    throw std::runtime_error(std::string("TRIBIT_ISA=") + env +
                                             " cannot run on this CPU (or is not compiled in)");
                return *t;
            }
        }
        throw std::runtime_error(std::string("TRIBIT_ISA=") + env +
                                 " is unknown (generic, avx2, avx512, neon)");
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

#if !defined(TRIBIT_X86)
void fill_table_avx2(KernelTable&) {}
void fill_table_avx512(KernelTable&) {}
#endif
#if !defined(TRIBIT_ARM)
void fill_table_neon(KernelTable&) {}
#endif

}  // namespace tribit
