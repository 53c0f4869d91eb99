# Validation (issue 11): scripts/validate-mac.sh run end to end with --backend cpu (its logic is
# the Mac's, exercised on Linux), and strata-check-report against hand-edited reports.
get_filename_component(_val_tests ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)

# the checker rejects a report whose verdicts disagree with its figures, and schema breaks
add_executable(test_check_report ${_val_tests}/test_check_report.c)
target_link_libraries(test_check_report PRIVATE PkgConfig::JANSSON)
add_test(NAME check_report COMMAND test_check_report $<TARGET_FILE:strata-check-report>
         ${_val_tests}/fixtures/validate/report-cpu.json ${CMAKE_CURRENT_BINARY_DIR}/tmp_check_report)
set_tests_properties(check_report PROPERTIES LABELS unit TIMEOUT 120)

# the whole script, --quick: reduced generated models, so it stays within a few minutes on 2 cores
add_test(NAME validate_cpu COMMAND bash ${_val_tests}/test_validate.sh ${CMAKE_SOURCE_DIR} ${CMAKE_BINARY_DIR}
         ${CMAKE_CURRENT_BINARY_DIR}/tmp_validate)
set_tests_properties(validate_cpu PROPERTIES TIMEOUT 900)
