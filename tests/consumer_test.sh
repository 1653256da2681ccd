#!/bin/bash
# The installed package as a user gets it: `cmake --install` of this build tree into a fresh
# prefix, then examples/consumer configured against that prefix alone (find_package, the torch
# component when the tree has it), built and run; and the core through pkg-config.
# Needs BUILD_DIR, SOURCE_DIR and WITH_TORCH (ON/OFF) from CTest.
set -u
source "$(dirname "$0")/check_lib.sh"

prefix=$work/prefix
expect_ok "install" cmake --install "$BUILD_DIR" --prefix "$prefix"
for f in include/sparselink/codec.hpp lib/libsparselink_codec.a \
    lib/cmake/sparselink/sparselinkConfig.cmake lib/cmake/sparselink/sparselinkConfigVersion.cmake \
    lib/pkgconfig/sparselink.pc; do
  if [[ -f $prefix/$f ]]; then pass; else fail "install lacks $f"; fi
done

consumer=$work/consumer
expect_ok "configure consumer" cmake -S "$SOURCE_DIR/examples/consumer" -B "$consumer" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCONSUMER_WITH_TORCH="$WITH_TORCH" -DCMAKE_BUILD_TYPE=Release
expect_ok "build consumer" cmake --build "$consumer" -j 2
expect_ok "route_packet runs" "$consumer/route_packet"
grep -q "entries kept" "$work/out" && pass || fail "route_packet printed: $(cat "$work/out")"
if [[ $WITH_TORCH == ON ]]; then
  expect_ok "routed_step runs" "$consumer/routed_step"
  grep -q "wire bytes" "$work/out" && pass || fail "routed_step printed: $(cat "$work/out")"
fi

# The Python package, when this tree built it: importable from the prefix alone.
if [[ -d $BUILD_DIR/python/sparselink ]]; then
  site=$prefix/lib/python3/dist-packages
  expect_ok "python package imports from the prefix" env PYTHONPATH="$site" /usr/bin/python3 -c \
    "import sparselink, torch; assert sparselink.__file__.startswith('$site'); \
     p = sparselink.encode(torch.ones(2, 8), keep=0.5); assert sparselink.decode(p).sum() == 8"
fi

# A version the package does not satisfy, and a component it was built without, are refused.
mkdir -p "$work/strict"
cat >"$work/strict/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(strict LANGUAGES CXX)
find_package(sparselink ${WANT_VERSION} REQUIRED ${WANT_COMPONENTS})
CMAKE
expect_error "version 9 refused" "requested version \"9.0\"" cmake -S "$work/strict" -B "$work/strict/b1" \
  -DCMAKE_PREFIX_PATH="$prefix" -DWANT_VERSION=9.0
expect_error "unknown component refused" "cuda" cmake -S "$work/strict" \
  -B "$work/strict/b2" -DCMAKE_PREFIX_PATH="$prefix" "-DWANT_COMPONENTS=COMPONENTS;cuda"

# pkg-config: the core's flags and libraries from the relocated .pc.
expect_ok "pkg-config build" bash -c "g++ -O1 '$SOURCE_DIR/examples/consumer/route_packet.cc' \
  -o '$work/route_packet_pc' \$(PKG_CONFIG_PATH='$prefix/lib/pkgconfig' pkg-config --cflags --libs sparselink)"
expect_ok "pkg-config program runs" "$work/route_packet_pc"
finish
