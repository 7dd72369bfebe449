#include <atomic>
#include <string>

#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant.hpp"
#include "kernels.hpp"

namespace epwa::ops {
namespace {
bool cpu_has(Isa isa) {
  if (isa == Isa::Scalar) return true;
  const CpuFeatures& f = cpu_features();
  return avx2_kernels() != nullptr && f.avx2 && f.fma && f.f16c;
}

// EPWA_ISA=scalar|avx2|avx512vnni caps the kernels at start-up (to compare paths without
// rebuilding). The quant level reads and checks it; the float kernels have no AVX-512 level.
Isa initial_isa() {
  return epwa::best_isa() == KernelIsa::Scalar ? Isa::Scalar : best_isa();
}

std::atomic<Isa>& active() {
  static std::atomic<Isa> a{initial_isa()};
  return a;
}
}  // namespace

std::string_view isa_name(Isa isa) {
  return isa == Isa::Avx2 ? "avx2" : "scalar";
}

Isa best_isa() {
  return cpu_has(Isa::Avx2) ? Isa::Avx2 : Isa::Scalar;
}

Isa active_isa() {
  return active().load(std::memory_order_relaxed);
}

void set_isa(Isa isa) {
  check(cpu_has(isa),
        "kernels: this CPU cannot run the " + std::string(isa_name(isa)) + " kernels");
  active().store(isa, std::memory_order_relaxed);
}

std::vector<Isa> available_isas() {
  std::vector<Isa> v{Isa::Scalar};
  if (cpu_has(Isa::Avx2)) v.push_back(Isa::Avx2);
  return v;
}

const Kernels& kernels_for(Isa isa) {
  check(cpu_has(isa),
        "kernels: this CPU cannot run the " + std::string(isa_name(isa)) + " kernels");
  return isa == Isa::Avx2 ? *avx2_kernels() : scalar_kernels();
}

const Kernels& kernels() {
  return active_isa() == Isa::Avx2 ? *avx2_kernels() : scalar_kernels();
}

}  // namespace epwa::ops
