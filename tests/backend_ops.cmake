# The backend parity test: one executable, any backend by name. The cpu backend runs once per
# SIMD level (STRATA_CPU_LEVEL); a level this machine lacks exits 77 and counts as skipped.
# Other backends add `add_test(NAME backend_ops_<name> COMMAND test_backend_ops <name>)`.
add_executable(test_backend_ops test_backend_ops.c mm_terms.c)
target_link_libraries(test_backend_ops PRIVATE strata_gen)
foreach(level scalar avx2 avx2-vnni avx512 neon neon-dot)
  add_test(NAME backend_ops_cpu_${level} COMMAND test_backend_ops cpu)
  set_tests_properties(backend_ops_cpu_${level} PROPERTIES
    ENVIRONMENT "STRATA_CPU_LEVEL=${level}" SKIP_RETURN_CODE 77)
endforeach()
add_test(NAME backend_ops_cpu_ref COMMAND test_backend_ops cpu-ref)

# the aarch64 levels from an x86-64 machine: a cross build run under qemu (skipped without the tools)
if(NOT CMAKE_CROSSCOMPILING AND CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$")
  add_test(NAME backend_ops_cpu_aarch64_qemu
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_neon_qemu.sh ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/aarch64)
  set_tests_properties(backend_ops_cpu_aarch64_qemu PROPERTIES SKIP_RETURN_CODE 77)
endif()

# the cpu backend's thread pool: every task and every unit of a ranged job exactly once
add_executable(test_threadpool test_threadpool.c)
target_link_libraries(test_threadpool PRIVATE strata_kernels)
add_test(NAME threadpool COMMAND test_threadpool)
