# Tokenizer encoding speed (issue 3): bench_tokenizer TOKDIR [FIXDIR]
add_executable(bench_tokenizer ${CMAKE_CURRENT_LIST_DIR}/bench_tokenizer.c)
target_link_libraries(bench_tokenizer PRIVATE strata_common)
