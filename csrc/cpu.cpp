#include "cpu.h"

#include <cstring>
#include <fstream>
#include <string>

#if defined(TRIBIT_X86)
#include <cpuid.h>
#endif
#if defined(TRIBIT_ARM) && defined(__linux__)
#include <sys/auxv.h>
#endif

namespace tribit {

#if defined(TRIBIT_X86)
static uint64_t xgetbv0() {
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (uint64_t(edx) << 32) | eax;
}
#endif

static CpuInfo detect() {
    CpuInfo c;
#if defined(TRIBIT_X86)
    unsigned a = 0, b = 0, cx = 0, d = 0;
    char brand[49] = {0};
    if (__get_cpuid(0x80000000, &a, &b, &cx, &d) && a >= 0x80000004) {
        for (unsigned i = 0; i < 3; i++) {
            __get_cpuid(0x80000002 + i, &a, &b, &cx, &d);
            std::memcpy(brand + 16 * i, &a, 4);
            std::memcpy(brand + 16 * i + 4, &b, 4);
            std::memcpy(brand + 16 * i + 8, &cx, 4);
            std::memcpy(brand + 16 * i + 12, &d, 4);
        }
    }
    c.name = brand;
    while (!c.name.empty() && c.name.back() == ' ') c.name.pop_back();
    __get_cpuid(1, &a, &b, &cx, &d);
    {
        // family/model tell hosts apart where a VM hides the brand ("AMD EPYC")
        unsigned family = (a >> 8) & 0xF, model = (a >> 4) & 0xF;
        if (family == 0xF) family += (a >> 20) & 0xFF;
        if (family == 0x6 || family >= 0xF) model += ((a >> 16) & 0xF) << 4;
        c.name = (c.name.empty() ? std::string("x86-64") : c.name) + " (family " +
                 std::to_string(family) + " model " + std::to_string(model) + ")";
    }
    bool osxsave = cx & (1u << 27);
    c.fma = cx & (1u << 12);
    c.f16c = cx & (1u << 29);
    bool avx = cx & (1u << 28);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm_os = (xcr0 & 0x6) == 0x6;
    bool zmm_os = (xcr0 & 0xE6) == 0xE6;
    if (__get_cpuid_count(7, 0, &a, &b, &cx, &d)) {
        c.avx2 = avx && ymm_os && (b & (1u << 5));
        c.bmi2 = b & (1u << 8);
        c.avx512f = zmm_os && (b & (1u << 16));
        c.avx512dq = zmm_os && (b & (1u << 17));
        c.avx512bw = zmm_os && (b & (1u << 30));
        c.avx512vl = zmm_os && (b & (1u << 31));
        c.avx512vnni = zmm_os && (cx & (1u << 11));
    }
    c.fma = c.fma && ymm_os;
    c.f16c = c.f16c && ymm_os;
#elif defined(TRIBIT_ARM)
    c.name = "arm64";
    c.neon = true;
#if defined(__linux__) && defined(HWCAP_ASIMDDP)
    c.dotprod = getauxval(AT_HWCAP) & HWCAP_ASIMDDP;
#endif
#endif
    if (c.name.empty()) {
        std::ifstream f("/proc/cpuinfo");
        std::string line;
        while (std::getline(f, line)) {
            if (line.rfind("model name", 0) == 0) {
                c.name = line.substr(line.find(':') + 2);
                break;
            }
        }
    }
    return c;
}

const CpuInfo& cpu_info() {
    static const CpuInfo info = detect();
    return info;
}

std::vector<std::string> CpuInfo::features() const {
    std::vector<std::string> f;
    auto add = [&](bool v, const char* n) { if (v) f.push_back(n); };
    add(avx2, "avx2");
    add(fma, "fma");
    add(f16c, "f16c");
    add(bmi2, "bmi2");
    add(avx512f, "avx512f");
    add(avx512bw, "avx512bw");
    add(avx512vl, "avx512vl");
    add(avx512dq, "avx512dq");
    add(avx512vnni, "avx512vnni");
    add(neon, "neon");
    add(dotprod, "dotprod");
    return f;
}

}  // namespace tribit
