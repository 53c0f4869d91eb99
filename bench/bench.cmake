# bench_cpu: memory bandwidth, q4 matvec/matmul at real shapes, whole-model prefill/decode on the
# cpu backend. Results for the reference machine are in bench/RESULTS.md.
add_executable(bench_cpu ${CMAKE_CURRENT_LIST_DIR}/bench_cpu.c)
target_link_libraries(bench_cpu PRIVATE strata_gen)
