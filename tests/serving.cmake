# Serving (issue 9): generation + speculative decoding, the HTTP API with an OpenAI client.
# Needs the tokenizers fixture (tests/tokenizer.cmake) for a text-capable model, and npm for the
# client library (installed at test time, pinned).
get_filename_component(_sv_tests ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)
if(NOT TARGET strata_generate)
  include(${_sv_tests}/../master/serving.cmake)
endif()
set(STRATA_OPENAI_NPM_VERSION 4.104.0)
set(_sv_npm ${CMAKE_BINARY_DIR}/npm)

# generation + speculative decoding on engine_local (the cluster variant runs in test_serving.sh)
add_executable(test_generate ${_sv_tests}/test_generate.c ${_sv_tests}/../master/engine_local.c)
target_link_libraries(test_generate PRIVATE strata_generate strata_master_cluster)
add_test(NAME generate COMMAND sh -c "rm -rf \"$2\" && \"$0\" --out \"$2\" --shape tiny-qwen --vocab 151936 --layers 2 --seed 5 >/dev/null && cp \"$3\"/qwen3/tokenizer.json \"$3\"/qwen3/tokenizer_config.json \"$2\"/ && \"$1\" \"$2\""
         $<TARGET_FILE:strata-gen> $<TARGET_FILE:test_generate> ${CMAKE_CURRENT_BINARY_DIR}/tmp_generate ${STRATA_TOKENIZER_DIR})
set_tests_properties(generate PROPERTIES FIXTURES_REQUIRED tokenizers TIMEOUT 120)

# the OpenAI client library, pinned; kept between runs when the version matches
add_test(NAME npm_openai COMMAND sh -c "grep -qs '\"version\": \"$1\"' \"$0\"/node_modules/openai/package.json || npm install --silent --no-audit --no-fund --prefix \"$0\" openai@$1"
         ${_sv_npm} ${STRATA_OPENAI_NPM_VERSION})
set_tests_properties(npm_openai PROPERTIES FIXTURES_SETUP npm_openai TIMEOUT 180)

# `strata-master --serve` once main.c hands --serve to http_main; strata-serve is the same server
file(READ ${_sv_tests}/../master/main.c _sv_main_c)
if(_sv_main_c MATCHES "http_main")
  set(_sv_server $<TARGET_FILE:strata-master>)
else()
  set(_sv_server $<TARGET_FILE:strata-serve>)
endif()
add_test(NAME serving COMMAND sh ${_sv_tests}/test_serving.sh ${_sv_server} $<TARGET_FILE:strata-master>
         $<TARGET_FILE:strata-worker> $<TARGET_FILE:strata-gen> $<TARGET_FILE:test_generate> ${STRATA_TOKENIZER_DIR}
         ${_sv_npm} ${_sv_tests}/serving_client.mjs ${CMAKE_CURRENT_BINARY_DIR}/tmp_serving)
# ~35 s here on 2 busy cores; the steps inside are bounded by `timeout` too, and ctest kills the
# whole process tree on its timeout (the script's trap kills servers and workers otherwise)
set_tests_properties(serving PROPERTIES FIXTURES_REQUIRED "tokenizers;npm_openai" TIMEOUT 120)
