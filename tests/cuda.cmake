# CUDA backend tests: parity of every op with the cpu reference. They need a GPU: where none
# is present (CI) the executables exit 77 and ctest reports SKIP.
if(TARGET strata_cuda)
  add_executable(test_cuda_ops test_cuda_ops.c)
  target_link_libraries(test_cuda_ops PRIVATE strata_common m)
  add_test(NAME cuda_ops COMMAND test_cuda_ops)
  set_tests_properties(cuda_ops PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu)

  # the shared op-parity test, once it exists (tests/backend_ops.cmake is included before this)
  if(TARGET test_backend_ops)
    add_test(NAME backend_ops_cuda COMMAND test_backend_ops cuda)
    set_tests_properties(backend_ops_cuda PROPERTIES SKIP_RETURN_CODE 77 LABELS gpu)
  endif()
endif()
