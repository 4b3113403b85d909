#include <nanobind/nanobind.h>
namespace nb = nanobind;
void bind_model(nb::module_& m) {}
