#!/usr/bin/env bash
# Installs asgd from BUILD_DIR into a fresh prefix, then configures and builds an example
# against it with find_package(asgd), as an outside project would, and runs it on a tiny
# generated data set so that it also links and runs. With --headers CXX instead of an example,
# compiles every installed header on its own with CXX: each must stand alone on the install
# tree (a header that pulled in one that is not installed would pass the examples unnoticed).
#   check_install.sh BUILD_DIR SOURCE_DIR EXAMPLE [PROGRAM ARGS...]
#   check_install.sh BUILD_DIR SOURCE_DIR --headers CXX [-IDIR...]   (the dependencies' headers)
set -euo pipefail
build_dir=$1 source_dir=$2 example=$3
shift 3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/lib/cmake/asgd/asgdConfig.cmake"
test -f "$work/prefix/include/asgd/runtime/trainer.h"
test -f "$work/prefix/include/asgd/asgd/config.h"
# Internal headers stay out of the install.
test ! -e "$work/prefix/include/asgd/runtime/detail"
if [[ $example == --headers ]]; then
  cxx=$1
  shift
  include="$work/prefix/include/asgd"
  headers=$(cd "$include" && find . -name '*.h' | sed 's|^\./||' | sort)
  test -n "$headers"
  failed=0
  for h in $headers; do
    # Headers that need CUDA types refuse a build without it, by design.
    if grep -q '#error.*CUDA' "$include/$h" && ! grep -q 'ASGD_HAVE_CUDA 1' "$include/asgd/config.h"; then
      continue
    fi
    if ! printf '#include "%s"\n' "$h" | "$cxx" -std=c++17 -fsyntax-only -I"$include" "$@" -x c++ - \
      2>"$work/err"; then
      echo "FAIL: $h does not compile on its own against the install tree:"
      head -5 "$work/err"
      failed=1
    fi
  done
  ((failed == 0)) && echo "every installed header ($(echo "$headers" | wc -l)) compiles on its own"
  exit $failed
fi
cmake -S "$source_dir/examples/$example" -B "$work/example" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/example" >/dev/null
echo "built examples/$example against the installed package"
if (($# > 0)); then
  program=$1
  shift
  "$work/example/$program" "$@"
fi
