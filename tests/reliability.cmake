# Reliability and security (issue 10): failover on a loopback cluster, CurveZMQ refusal, the
# fuzz targets' corpora replayed as a unit test, and a short libFuzzer run when clang has it.
get_filename_component(_rel_tests ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)

if(TARGET strata-worker)
  add_executable(test_failover ${_rel_tests}/test_failover.c ${CMAKE_SOURCE_DIR}/master/engine_local.c)
  target_link_libraries(test_failover PRIVATE strata_master_cluster strata_gen)
  add_test(NAME failover COMMAND test_failover $<TARGET_FILE:strata-worker> ${CMAKE_CURRENT_BINARY_DIR}/tmp_failover)
  set_tests_properties(failover PROPERTIES TIMEOUT 360 LABELS unit)
endif()

if(TARGET strata-worker)
  add_executable(test_curve ${_rel_tests}/test_curve.c ${CMAKE_SOURCE_DIR}/master/engine_local.c)
  target_link_libraries(test_curve PRIVATE strata_master_cluster strata_gen)
  add_test(NAME curve COMMAND test_curve $<TARGET_FILE:strata-worker> ${CMAKE_CURRENT_BINARY_DIR}/tmp_curve)
  set_tests_properties(curve PROPERTIES TIMEOUT 120 LABELS unit)
endif()

# The fuzz targets' corpora replayed by the project's compiler (tests/fuzz/replay_main.c): every
# seed and every crash input ever kept in tests/fuzz/<target>/ runs in every test run, ASan build
# included, with or without clang.
set(_fz ${_rel_tests}/fuzz)
function(strata_fuzz_replay t)
  add_executable(fuzz_replay_${t} ${_fz}/fuzz_${t}.c ${_fz}/replay_main.c)
  target_link_libraries(fuzz_replay_${t} PRIVATE ${ARGN})
  add_test(NAME fuzz_replay_${t} COMMAND fuzz_replay_${t} ${_fz}/${t})
  set_tests_properties(fuzz_replay_${t} PROPERTIES TIMEOUT 120 LABELS unit)
endfunction()
strata_fuzz_replay(safetensors strata_common)
strata_fuzz_replay(tokenizer strata_common)
if(TARGET strata_master_cluster)
  strata_fuzz_replay(wire strata_cluster)
  strata_fuzz_replay(topology strata_master_cluster)
endif()

# A short libFuzzer run of every target (clang -fsanitize=fuzzer,address,undefined), seconds per
# target from STRATA_FUZZ_SECONDS; skipped (77) where clang with libFuzzer is not installed
# (Debian: clang libclang-rt-14-dev). Long runs: tests/fuzz/fuzz.sh OUT 0 -runs=1000000.
set(STRATA_FUZZ_SECONDS 10 CACHE STRING "seconds of libFuzzer per target in the fuzz test")
find_program(STRATA_BASH bash)
if(STRATA_BASH)
  add_test(NAME fuzz COMMAND ${STRATA_BASH} ${_fz}/fuzz.sh ${CMAKE_CURRENT_BINARY_DIR}/fuzz_out ${STRATA_FUZZ_SECONDS})
  # a loaded CI box must not turn a slow input into a "hang"
  set_tests_properties(fuzz PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 LABELS fuzz ENVIRONMENT FUZZ_TIMEOUT=30)
endif()
