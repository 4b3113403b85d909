// CPU feature detection, read once.
#pragma once
#include <string>
#include <vector>

namespace tribit {

struct CpuInfo {
    std::string name;
    bool avx2 = false, fma = false, f16c = false, bmi2 = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false;
    bool neon = false, dotprod = false;
    std::vector<std::string> features() const;
};

const CpuInfo& cpu_info();

}  // namespace tribit
