#!/usr/bin/env bash
# Packs the headers, libraries and CMake package files that asgd's build takes from Debian 12
# -dev packages (OpenBLAS, fmt, nlohmann-json, toml++, CLI11, xxhash, zlib, GoogleTest) into
# one folder, for a machine that has a compiler, nvcc, cmake and ninja but none of those
# packages (the GPU machine). scripts/gpu_checks.sh --deps DIR builds against the folder.
#
#   scripts/pack_gpu_deps.sh [--mpi] [--tar FILE] [DIR]
#                                      (DIR default: build-deps, which .gitignore's /build*/ covers)
#
#   --mpi        also Open MPI (Debian 12's 4.1 and the libraries it loads), fetched with
#                `apt-get download` and unpacked under DIR/openmpi: relocatable through
#                OPAL_PREFIX, so gpu_checks.sh --mpi can build the MPI transport and run the mpi
#                tier and mpirun with the CUDA backend there
#   --tar FILE   also write DIR as one gzip'd tar (what travels to the GPU machine is limited
#                in size; the tar is about a third of the folder)
#
# The folder mirrors /usr (include/, lib/x86_64-linux-gnu/, share/cmake/) so that the packages'
# own CMake config files, which locate everything relative to themselves, work unchanged. It
# holds regular files only: every symbolic link is resolved, and each library is stored once,
# under the name the build links against. lib/sonames.txt lists the name the dynamic loader
# looks for (the SONAME) beside each stored library; gpu_checks.sh makes those names in its
# build folder. deps.cmake is an initial cache (cmake -C) that points CMake at everything here.
#
# Configure against it with either
#   cmake -C DIR/deps.cmake ...                              (no assumptions about the target)
#   cmake -DCMAKE_PREFIX_PATH=DIR -DOpenBLAS_ROOT=DIR ...    (Debian/Ubuntu-style multiarch)
# and run what was built with the SONAME links on LD_LIBRARY_PATH (gpu_checks.sh does both).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
with_mpi=0
tarball=""
while (($#)); do
  case "$1" in
    --mpi) with_mpi=1; shift ;;
    --tar) tarball="${2:?--tar needs a file}"; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "pack_gpu_deps: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) break ;;
  esac
done
dest="${1:-$repo/build-deps}"
arch=x86_64-linux-gnu
usr=/usr
blas_dir="$usr/lib/$arch/openblas-openmp"
blas_include="$usr/include/$arch/openblas-openmp"
limit_mib=64

die() {
  echo "pack_gpu_deps: $*" >&2
  exit 1
}

for f in "$blas_dir/libopenblas.so" "$blas_include/cblas.h" "$usr/include/fmt/format.h" \
  "$usr/include/nlohmann/json.hpp" "$usr/include/toml++/toml.h" "$usr/include/CLI/CLI.hpp" \
  "$usr/include/xxhash.h" "$usr/include/zlib.h" "$usr/include/gtest/gtest.h" \
  "$usr/include/gmock/gmock.h"; do
  [[ -e "$f" ]] || die "$f is missing: run scripts/install_deps.sh first"
done
command -v objdump >/dev/null || die "objdump (binutils) is needed to read library SONAMEs"

rm -rf "$dest"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

# copy SRC DST: one file, symbolic links resolved.
copy() {
  mkdir -p "$(dirname "$dest/$2")"
  cp -L --preserve=mode,timestamps "$1" "$dest/$2"
}
# copy_tree SRC DST: a folder of headers or CMake files, symbolic links resolved.
copy_tree() {
  mkdir -p "$(dirname "$dest/$2")"
  cp -RL --preserve=mode,timestamps "$1" "$dest/$2"
}

# Headers.
for d in fmt nlohmann toml++ CLI gtest gmock; do copy_tree "$usr/include/$d" "include/$d"; done
for h in zlib.h zconf.h xxhash.h xxh3.h xxh_x86dispatch.h; do copy "$usr/include/$h" "include/$h"; done
for h in "$blas_include"/*.h; do copy "$h" "include/openblas/$(basename "$h")"; done

# CMake package files, where their relative paths expect them.
copy_tree "$usr/lib/$arch/cmake/fmt" "lib/$arch/cmake/fmt"
copy_tree "$usr/lib/$arch/cmake/tomlplusplus" "lib/$arch/cmake/tomlplusplus"
copy_tree "$usr/lib/$arch/cmake/GTest" "lib/$arch/cmake/GTest"
copy_tree "$usr/share/cmake/nlohmann_json" "share/cmake/nlohmann_json"
copy_tree "$usr/share/cmake/CLI11" "share/cmake/CLI11"

# Libraries under the names the build links against. Those our own find modules look for
# (OpenBLAS, xxhash, zlib) go to lib/, which every platform searches; those named by a
# package's config file go where that file says.
libs=(
  "$blas_dir/libopenblas.so:lib/libopenblas.so"
  "$usr/lib/$arch/libxxhash.so:lib/libxxhash.so"
  "$usr/lib/$arch/libz.so:lib/libz.so"
  "$usr/lib/$arch/libfmt.so.9.1.0:lib/$arch/libfmt.so.9.1.0"
  "$usr/lib/$arch/libtomlplusplus.so:lib/$arch/libtomlplusplus.so"
)
# Static GoogleTest libraries, named by the GTest config files.
# shellcheck disable=SC2016  # the pattern matches a literal ${_IMPORT_PREFIX}
mapfile -t gtest_libs < <(grep -ho '\${_IMPORT_PREFIX}/lib/[^"]*\.a' \
  "$usr/lib/$arch/cmake/GTest/"*-none.cmake | sort -u)
((${#gtest_libs[@]} == 4)) || die "expected 4 GoogleTest libraries, found ${#gtest_libs[@]}"
for f in "${gtest_libs[@]}"; do
  rel="${f#\$\{_IMPORT_PREFIX\}/}"
  libs+=("$usr/$rel:$rel")
done
# What OpenBLAS needs at run time beyond the C/C++ runtime every machine with a compiler has
# (libgomp comes with that compiler and must stay its own).
for soname in libgfortran.so.5 libquadmath.so.0; do
  src="$(ldd "$blas_dir/libopenblas.so" | awk -v n="$soname" '$1 == n { print $3 }')"
  [[ -n "$src" ]] || die "OpenBLAS does not resolve $soname here"
  libs+=("$src:lib/$soname")
done

: >"$dest/lib/sonames.txt"
for entry in "${libs[@]}"; do
  src="${entry%%:*}" rel="${entry#*:}"
  [[ -e "$src" ]] || die "$src is missing"
  copy "$src" "$rel"
  if [[ "$rel" == *.so* ]]; then
    soname="$(objdump -p "$dest/$rel" | awk '$1 == "SONAME" { print $2 }')"
    [[ -n "$soname" ]] || die "$rel has no SONAME"
    echo "$soname $rel" >>"$dest/lib/sonames.txt"
  fi
done

# An initial cache that needs no multiarch guess on the target.
cat >"$dest/deps.cmake" <<EOF
# Generated by scripts/pack_gpu_deps.sh: use with cmake -C <this file>. Paths are relative to
# this file, so the folder may move.
get_filename_component(_asgd_deps "\${CMAKE_CURRENT_LIST_DIR}" ABSOLUTE)
set(CMAKE_PREFIX_PATH "\${_asgd_deps}" CACHE PATH "asgd packed dependencies")
set(OpenBLAS_ROOT "\${_asgd_deps}" CACHE PATH "OpenBLAS from the packed dependencies")
set(fmt_DIR "\${_asgd_deps}/lib/$arch/cmake/fmt" CACHE PATH "")
set(tomlplusplus_DIR "\${_asgd_deps}/lib/$arch/cmake/tomlplusplus" CACHE PATH "")
set(GTest_DIR "\${_asgd_deps}/lib/$arch/cmake/GTest" CACHE PATH "")
set(nlohmann_json_DIR "\${_asgd_deps}/share/cmake/nlohmann_json" CACHE PATH "")
set(CLI11_DIR "\${_asgd_deps}/share/cmake/CLI11" CACHE PATH "")
EOF

# What the libraries ask of the target's C and C++ runtimes, for a quick check there.
{
  echo "packed on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  echo "newest symbol versions required:"
  find "$dest/lib" -name '*.so*' -type f -exec objdump -T {} + 2>/dev/null |
    grep -o 'GLIBC_[0-9.]*\|GLIBCXX_[0-9.]*\|CXXABI_[0-9.]*' | sort -t_ -k1,1 -k2,2V -u |
    awk -F_ '{ v[$1] = $0 } END { for (k in v) print "  " v[k] }'
} >"$dest/README.txt"

# Open MPI as Debian ships it, unpacked as a root of its own: with OPAL_PREFIX=DIR/openmpi/usr
# its programs, wrappers, plugins and help files are found there (/usr/share/doc and the
# manuals left out).
if ((with_mpi)); then
  debs="$(mktemp -d)"
  (cd "$debs" && apt-get download openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev \
    libhwloc15 libevent-core-2.1-7 libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0 \
    libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libpsm2-2 libpsm-infinipath1 \
    libnuma1 libmunge2 libltdl7 libpciaccess0 >/dev/null 2>&1) ||
    die "apt-get download of Open MPI failed (Debian's package lists are needed: apt-get update)"
  for f in "$debs"/*.deb; do dpkg -x "$f" "$dest/openmpi"; done
  rm -rf "$debs" "$dest/openmpi/usr/share/doc" "$dest/openmpi/usr/share/man" \
    "$dest/openmpi/usr/share/lintian"
  [[ -x "$dest/openmpi/usr/bin/mpirun.openmpi" ]] || die "Open MPI did not unpack"
fi

if [[ -n "$(find "$dest" -path "$dest/openmpi" -prune -o -type l -print)" ]]; then
  die "symbolic links left in $dest"
fi
size_kib="$(du -sk "$dest" | cut -f1)"
echo "pack_gpu_deps: $dest: $((size_kib / 1024)) MiB, $(find "$dest" -type f | wc -l) files"
if [[ -n "$tarball" ]]; then
  tar czf "$tarball" -C "$dest" .
  size_kib="$(du -sk "$tarball" | cut -f1)"
  echo "pack_gpu_deps: $tarball: $((size_kib / 1024)) MiB"
fi
((size_kib < limit_mib * 1024)) || die "the pack is $((size_kib / 1024)) MiB, over ${limit_mib} MiB"
