#!/bin/sh
# Install the Debian packages this project needs, only those missing.
# Usage: tools/deps.sh [build|test|bench]   (apt-get needs root)
set -eu
build="gcc make pkg-config libc6-dev zlib1g-dev libnifti2-dev libniftiio-dev libznz-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev libcmocka-dev"
test_extra="python3-nibabel python3-numpy mricron-data"
bench_extra="python3-torch python3-onnx"
case "${1:-build}" in
build) want="$build" ;;
test) want="$build $test_extra" ;;
bench) want="$build $test_extra $bench_extra" ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ "${1:-build}" = bench ] && ! command -v npm >/dev/null; then
    command -v node >/dev/null || missing="$missing nodejs"
    missing="$missing npm"
fi
[ -z "$missing" ] && exit 0
echo "deps: installing$missing" >&2
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: missing Debian packages:$missing; run 'make deps' as root" >&2; exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >&2
