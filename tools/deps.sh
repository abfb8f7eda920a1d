#!/bin/sh
# Install the Debian packages this project needs, only those missing.
# Usage: tools/deps.sh [build|test|bench|fuzz|check-long]   (apt-get needs root)
set -eu
build="gcc make pkg-config libc6-dev zlib1g-dev libnifti2-dev libniftiio-dev libznz-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev libcmocka-dev libpng-dev"
# parallel: test_batch runs the README's GNU parallel line; man-db and
# groff-base: test_cliopt renders the man pages with man -l.
test_extra="python3-nibabel python3-numpy mricron-data parallel man-db groff-base"
# dcm2niix, python3-pydicom: test_dicom (make check-long); python3-scipy
# and time: tools/geom_check.py (make geom-check).
bench_extra="python3-torch python3-onnx python3-matplotlib dcm2niix python3-pydicom python3-scipy time"
# make fuzz: clang 14 with its libFuzzer/sanitizer runtimes, and LLVM's
# OpenMP (the sources are built with -fopenmp); time measures CPU seconds.
fuzz_extra="clang libclang-rt-14-dev libomp-14-dev time"
# make check-long also cross-compiles the runtime for aarch64 and runs its
# tests under qemu-user (the arm64 libraries: tools/arm64_sysroot.sh).
long_extra="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
case "${1:-build}" in
build) want="$build" ;;
test) want="$build $test_extra" ;;
bench) want="$build $test_extra $bench_extra" ;;
fuzz) want="$build $fuzz_extra" ;;
check-long) want="$build $test_extra $bench_extra $long_extra" ;;
*) echo "usage: $0 [build|test|bench|fuzz|check-long]" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# Tests compare exported ONNX models with ONNX Runtime (tools/ort_run.js):
# node and npm from the system, onnxruntime-node into $BUILD/node (the place
# tools/bench.sh uses; --ignore-scripts: the CPU binaries ship inside the
# npm package).  SL_NO_ORT=1 skips it (and the tests then skip those checks).
ORT_VERSION=1.30.0
NODE_DIR=${BUILD:-build}/node
case "${1:-build}" in test | bench) ort=1 ;; *) ort=0 ;; esac
if [ $ort = 1 ] && [ "${SL_NO_ORT:-}" != 1 ] && ! command -v npm >/dev/null; then
    command -v node >/dev/null || missing="$missing nodejs"
    missing="$missing npm"
fi
install_ort() {
    [ $ort = 0 ] || [ "${SL_NO_ORT:-}" = 1 ] && return 0
    [ -f "$NODE_DIR/node_modules/onnxruntime-node/package.json" ] && return 0
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] ||
        echo '{"name":"sauron-test-peer","private":true}' >"$NODE_DIR/package.json"
    echo "deps: installing onnxruntime-node@$ORT_VERSION into $NODE_DIR" >&2
    (cd "$NODE_DIR" && npm install --ignore-scripts --no-audit --no-fund \
        "onnxruntime-node@$ORT_VERSION" >&2) ||
        { echo "error: npm install onnxruntime-node failed; the ONNX Runtime tests need it (SL_NO_ORT=1 skips them)" >&2; exit 1; }
}
[ -z "$missing" ] && { install_ort "${1:-build}"; exit 0; }
echo "deps: installing$missing" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: missing Debian packages:$missing; run 'make deps' as root" >&2; exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
install_ort "${1:-build}"
