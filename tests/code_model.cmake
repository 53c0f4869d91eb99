# strata-code-4m, a small trained model (tests/fixtures/code-model, made by
# tools/train_code_model.py), against the greedy ids of Hugging Face transformers: the tokenizer,
# plain and speculative greedy decoding, on one node and on a 3-worker loopback cluster.
get_filename_component(_cm_tests ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)
if(NOT TARGET strata_generate)
  include(${_cm_tests}/../master/serving.cmake)
endif()

add_executable(test_code_model ${_cm_tests}/test_code_model.c ${_cm_tests}/../master/engine_local.c)
target_link_libraries(test_code_model PRIVATE strata_generate strata_master_cluster PkgConfig::JANSSON)
add_test(NAME code_model COMMAND sh ${_cm_tests}/test_code_model.sh $<TARGET_FILE:strata-master>
         $<TARGET_FILE:strata-worker> $<TARGET_FILE:test_code_model> ${_cm_tests}/fixtures/code-model
         ${CMAKE_CURRENT_BINARY_DIR}/tmp_code_model)
# a few seconds here (2 cores); labelled unit as the cluster tests are, so CI runs it under ASan+UBSan
set_tests_properties(code_model PROPERTIES LABELS unit TIMEOUT 120)
