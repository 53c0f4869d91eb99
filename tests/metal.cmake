# Metal: every MSL kernel through the MSL-on-CPU harness (metal-sim) against the cpu reference.
if(TARGET strata_metal_sim)
  add_executable(test_msl test_msl.c)
  target_link_libraries(test_msl PRIVATE strata_metal_sim m)
  add_test(NAME msl COMMAND test_msl)

  # the harness itself: simd ops, barriers, and divergence reported
  add_executable(test_msl_shim test_msl_shim.cpp)
  target_link_libraries(test_msl_shim PRIVATE strata_metal_sim)
  target_include_directories(test_msl_shim PRIVATE ${CMAKE_SOURCE_DIR}/kernels/metal/shim)
  set_target_properties(test_msl_shim PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
  target_compile_options(test_msl_shim PRIVATE -Wno-attributes -Wno-unused-parameter)
  add_test(NAME msl_shim COMMAND test_msl_shim)

  # the shared op-parity test (ops and whole tiny models) on metal-sim; backend.c does not know
  # the name yet, so the executable reaches the harness through a wrapped backend_new
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test_backend_ops.c)
    add_executable(test_backend_ops_msim test_backend_ops.c mm_terms.c test_msl_backend_ops.c)
    target_link_libraries(test_backend_ops_msim PRIVATE strata_gen strata_metal_sim m)
    target_link_options(test_backend_ops_msim PRIVATE "LINKER:--wrap=backend_new")
    add_test(NAME backend_ops_metal_sim COMMAND test_backend_ops_msim metal-sim)
  endif()
endif()
