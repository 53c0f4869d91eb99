# Text in and out (issue 3): tokenizer.json BPE, chat templates, sampler.
# Included from the top CMakeLists.txt after strata_common exists.
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)

target_sources(strata_common PRIVATE
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer.c
  ${CMAKE_CURRENT_LIST_DIR}/tokenizer_load.c
  ${CMAKE_CURRENT_LIST_DIR}/chat.c
)
# sampler.c may already be listed with the engine's sources; add it once.
get_target_property(_strata_common_sources strata_common SOURCES)
if(NOT _strata_common_sources MATCHES "sampler\\.c")
  target_sources(strata_common PRIVATE ${CMAKE_CURRENT_LIST_DIR}/sampler.c)
endif()
target_link_libraries(strata_common PUBLIC PkgConfig::PCRE2 PkgConfig::UTF8PROC)
