# Issue 7 (cpu speed): the fast cpu backend ("cpu") against the Hugging Face logits of the parity
# fixtures, whole model and split in two parts, with the same 1e-3 bound as the reference
# ("parity" runs cpu-ref). Every SIMD level this machine has is covered per op by backend_ops_cpu_*;
# this runs the level the backend picks by itself, as the engine does.
add_test(NAME parity_cpu COMMAND test_parity ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/parity
         ${CMAKE_CURRENT_BINARY_DIR}/tmp_parity_cpu cpu)
set_tests_properties(parity_cpu PROPERTIES LABELS unit)
# The AVX2 level's whole model too (its repacked 4-bit kernel, q4_pack_avx2.c, is what x86-64
# CPUs without AVX-512 run): the same fixtures and bound, the level forced.
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  add_test(NAME parity_cpu_avx2 COMMAND test_parity ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/parity
           ${CMAKE_CURRENT_BINARY_DIR}/tmp_parity_cpu_avx2 cpu)
  set_tests_properties(parity_cpu_avx2 PROPERTIES LABELS unit ENVIRONMENT "STRATA_CPU_LEVEL=avx2")
endif()
