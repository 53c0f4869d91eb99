# The CUDA backend: built where nvcc exists (STRATA_CUDA defaults to whether CMake finds it).
# Compiles on a machine with no GPU (CI); its tests skip there (exit 77).
include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(_strata_cuda_default ON)
else()
  set(_strata_cuda_default OFF)
endif()
option(STRATA_CUDA "Build the CUDA backend (needs nvcc)" ${_strata_cuda_default})

if(STRATA_CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(FATAL_ERROR "STRATA_CUDA=ON but no CUDA compiler was found (put nvcc on PATH or set CMAKE_CUDA_COMPILER)")
  endif()
  # sm_90 (H100) machine code plus compute_90 PTX that newer GPUs compile at load time
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES 90)
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)

  add_library(strata_cuda OBJECT
    kernels/cuda/cuda_backend.cu
    kernels/cuda/cuda_matmul.cu
    kernels/cuda/cuda_matvec.cu
    kernels/cuda/cuda_matvec_bulk.cu
    kernels/cuda/cuda_ops.cu
  )
  # The directory's C flags (-Wall -Werror, sanitizers) are not nvcc flags: replace them with
  # their host-compiler form.
  set_property(TARGET strata_cuda PROPERTY COMPILE_OPTIONS "")
  set(_strata_cuda_host_warn "-Wall,-Wextra")
  if(STRATA_WERROR)
    set(_strata_cuda_host_warn "${_strata_cuda_host_warn},-Werror")
  endif()
  target_compile_options(strata_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${_strata_cuda_host_warn}>
    $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>
    $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
  set_target_properties(strata_cuda PROPERTIES
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}"
    POSITION_INDEPENDENT_CODE ON)
  target_include_directories(strata_cuda PRIVATE ${CMAKE_SOURCE_DIR})
  target_link_libraries(strata_cuda PRIVATE CUDA::cudart_static)

  # backend.c finds backend_cuda_new through a weak reference, which never pulls a member out
  # of an archive: put the objects themselves on every link line that has the kernels.
  # (nvcc's host stubs use C++ runtime helpers, hence libstdc++ on the C link lines)
  target_link_libraries(strata_kernels INTERFACE $<TARGET_OBJECTS:strata_cuda> CUDA::cudart_static stdc++)
  add_dependencies(strata_kernels strata_cuda)

  # bench: device copy bandwidth, q4 matvec GB/s at the 7b/8b shapes (run by scripts/gpu-check.sh)
  add_executable(bench_cuda bench/bench_cuda.c)
  target_include_directories(bench_cuda PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(bench_cuda PRIVATE strata_common m)
endif()
