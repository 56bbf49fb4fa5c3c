# Included into the ThreadSanitizer build by scripts/sanitize.sh (CMAKE_PROJECT_INCLUDE).
#
# GCC 12 (and Clang, until llvm/llvm-project#167516) instruments the resolver that
# __attribute__((target_clones)) emits with __tsan_func_entry/__tsan_func_exit. The dynamic
# loader runs that resolver while it relocates the executable, before the TSan runtime is
# initialised, and the program dies with SIGSEGV before main (a three-line target_clones
# program reproduces it). The files listed in ASGD_TSAN_NO_FUNC_ENTRY (those that use
# target_clones) are compiled without the function entry/exit hooks; every memory access in
# them stays instrumented, so races in them are still reported, only without these files' own
# frames in the stacks.
foreach(file IN LISTS ASGD_TSAN_NO_FUNC_ENTRY)
  set_property(SOURCE "${CMAKE_SOURCE_DIR}/${file}" APPEND PROPERTY COMPILE_OPTIONS
               --param=tsan-instrument-func-entry-exit=0)
endforeach()
