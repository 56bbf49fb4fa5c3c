#!/usr/bin/env bash
# Installs asgd from BUILD_DIR into a fresh prefix, then configures and builds an example
# against it with find_package(asgd), as an outside project would, and runs it on a tiny
# generated data set so that it also links and runs.
#   check_install.sh BUILD_DIR SOURCE_DIR EXAMPLE [PROGRAM ARGS...]
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
cmake -S "$source_dir/examples/$example" -B "$work/example" -G Ninja \
  -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/example" >/dev/null
echo "built examples/$example against the installed package"
if (($# > 0)); then
  program=$1
  shift
  "$work/example/$program" "$@"
fi
