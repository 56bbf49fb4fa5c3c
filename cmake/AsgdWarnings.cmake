# One interface target carries the warning flags for all of our own code.
add_library(asgd_warnings INTERFACE)
target_compile_options(asgd_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align
                            -Woverloaded-virtual -Wnull-dereference -Wimplicit-fallthrough>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall -Xcompiler=-Wextra --Werror=cross-execution-space-call>)
if(ASGD_WERROR)
  target_compile_options(asgd_warnings INTERFACE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
endif()
