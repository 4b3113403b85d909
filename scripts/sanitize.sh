#!/usr/bin/env bash
# Build tribit._core once with AddressSanitizer + UndefinedBehaviorSanitizer (build/asan)
# and run the kernel and model tests against it (issue 17, item 10). Any ASan report or
# UBSan diagnostic aborts the test process, so a clean exit means nothing was found.
#
#   scripts/sanitize.sh                 # default test selection (below)
#   scripts/sanitize.sh tests/test_x.py # other tests
#
# Needs g++ (or clang++) with libasan/libubsan, cmake, ninja, and the package's test extras
# installed in the active Python. Python itself is not instrumented: ASan is preloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
CXX=${CXX:-g++}
BUILD=build/asan
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$CXX" -DPython_EXECUTABLE="$(command -v "$PY")" \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_MODULE_LINKER_FLAGS="$SAN" -DCMAKE_SHARED_LINKER_FLAGS="$SAN" \
  >/dev/null
cmake --build "$BUILD" -j "${JOBS:-2}"

# import tribit from src/ with the sanitized core first (an editable install's redirecting
# finder would load the normal build)
BOOT="$BUILD/boot"
mkdir -p "$BOOT"
cat > "$BOOT/sitecustomize.py" <<PYEOF
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "Redirecting" not in type(f).__name__]
sys.path.insert(0, "$(pwd)/src")
PYEOF

if [ "$#" -eq 0 ]; then
  set -- tests/test_kernels.py tests/test_model_runtime.py tests/test_model_loading.py \
    tests/test_load_limits.py tests/test_layers.py tests/test_generate.py \
    tests/test_model_sensitivity.py tests/test_gguf.py
fi
LIBASAN=$("$CXX" -print-file-name=libasan.so)
LIBUBSAN=$("$CXX" -print-file-name=libubsan.so)
export LD_PRELOAD="$LIBASAN $LIBUBSAN"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TRIBIT_CORE_DIR="$(pwd)/$BUILD"
export TRIBIT_SANITIZED=1
export PYTHONPATH="$(pwd)/$BOOT${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import tribit._core as c, sys; print('sanitized core:', c.__file__, file=sys.stderr)"
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
