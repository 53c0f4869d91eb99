# Cluster tests: units (no network), the worker's protocol against a fake master, and the
# integration test on loopback (3 workers + master as processes).
get_filename_component(_cl_tests ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)

add_executable(test_cluster_units ${_cl_tests}/test_cluster_units.c)
target_link_libraries(test_cluster_units PRIVATE strata_master_cluster strata_gen)
add_test(NAME cluster_units COMMAND test_cluster_units ${CMAKE_CURRENT_BINARY_DIR}/tmp_cluster_units)

add_executable(test_cluster_proto ${_cl_tests}/test_cluster_proto.c)
target_link_libraries(test_cluster_proto PRIVATE strata_master_cluster strata_gen)
add_test(NAME cluster_proto COMMAND test_cluster_proto $<TARGET_FILE:strata-worker> ${CMAKE_CURRENT_BINARY_DIR}/tmp_cluster_proto)
set_tests_properties(cluster_proto PROPERTIES TIMEOUT 300)

add_test(NAME cluster COMMAND sh ${_cl_tests}/test_cluster.sh $<TARGET_FILE:strata-master> $<TARGET_FILE:strata-worker>
         $<TARGET_FILE:strata-gen> $<TARGET_FILE:test_cluster_units> ${CMAKE_CURRENT_BINARY_DIR}/tmp_cluster)
set_tests_properties(cluster PROPERTIES TIMEOUT 900)
