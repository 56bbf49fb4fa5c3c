# Finds OpenBLAS and defines the imported target OpenBLAS::OpenBLAS.
#
# Debian installs several OpenBLAS variants side by side; the OpenMP one is preferred because
# it honours each thread's omp_set_num_threads(), which lets every worker thread own its
# share of cores. Set OpenBLAS_ROOT to pick another installation.
set(_openblas_arch_dirs)
if(CMAKE_LIBRARY_ARCHITECTURE)
  foreach(variant openblas-openmp openblas-pthread openblas-serial)
    list(APPEND _openblas_arch_dirs "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/${variant}")
  endforeach()
endif()

find_library(OpenBLAS_LIBRARY NAMES openblas
  HINTS ${OpenBLAS_ROOT} ENV OpenBLAS_ROOT ${_openblas_arch_dirs}
  PATH_SUFFIXES lib lib64)
get_filename_component(_openblas_variant "${OpenBLAS_LIBRARY}" DIRECTORY)
get_filename_component(_openblas_variant "${_openblas_variant}" NAME)
find_path(OpenBLAS_INCLUDE_DIR NAMES cblas.h openblas_config.h
  HINTS ${OpenBLAS_ROOT} ENV OpenBLAS_ROOT
        "/usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/${_openblas_variant}"
  PATH_SUFFIXES include include/openblas openblas)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(OpenBLAS REQUIRED_VARS OpenBLAS_LIBRARY OpenBLAS_INCLUDE_DIR)

if(OpenBLAS_FOUND AND NOT TARGET OpenBLAS::OpenBLAS)
  add_library(OpenBLAS::OpenBLAS UNKNOWN IMPORTED)
  set_target_properties(OpenBLAS::OpenBLAS PROPERTIES
    IMPORTED_LOCATION "${OpenBLAS_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${OpenBLAS_INCLUDE_DIR}")
endif()
mark_as_advanced(OpenBLAS_LIBRARY OpenBLAS_INCLUDE_DIR)
