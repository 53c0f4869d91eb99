# The fast cpu backend: the x86 SIMD levels are compiled with per-function target attributes, so
# the library needs no -mavx flags and runs on any x86-64; the level is chosen at run time.
target_sources(strata_kernels PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/cpu_fast.c
  ${CMAKE_CURRENT_LIST_DIR}/cpu_attn.c
  ${CMAKE_CURRENT_LIST_DIR}/cpu_prof.c
  ${CMAKE_CURRENT_LIST_DIR}/threadpool.c
  ${CMAKE_CURRENT_LIST_DIR}/q_scalar.c
  ${CMAKE_CURRENT_LIST_DIR}/q_avx2.c
  ${CMAKE_CURRENT_LIST_DIR}/f32_avx2.c
  ${CMAKE_CURRENT_LIST_DIR}/q_avx512.c
  ${CMAKE_CURRENT_LIST_DIR}/q4_avx512.c
  ${CMAKE_CURRENT_LIST_DIR}/q4_repack.c
  ${CMAKE_CURRENT_LIST_DIR}/q4_pack_avx512.c
  ${CMAKE_CURRENT_LIST_DIR}/q4_pack_avx2.c
  ${CMAKE_CURRENT_LIST_DIR}/q4_amx.c
  ${CMAKE_CURRENT_LIST_DIR}/q_neon.c
  ${CMAKE_CURRENT_LIST_DIR}/q_neon_dot.c
)
# aarch64: the dot-product level is one file built for ARMv8.2 (the others stay ARMv8.0); the
# backend runs it only where the CPU reports the instructions
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(aarch64|arm64|ARM64)$")
  set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/q_neon_dot.c PROPERTIES COMPILE_OPTIONS "-march=armv8.2-a+dotprod")
endif()

# backend.c reaches the fast backend through a weak reference, which does not pull an object out
# of a static archive: ask the linker for the symbol so every program linking strata_kernels gets
# it.
if(APPLE)
  target_link_options(strata_kernels INTERFACE "LINKER:-u,_backend_cpu_fast_new")
else()
  target_link_options(strata_kernels INTERFACE "LINKER:-u,backend_cpu_fast_new")
endif()
