# Discovery (issue 5): units (planner, TXT, no daemon) and the multi-host test in network namespaces.
get_filename_component(_disc_tests ${CMAKE_CURRENT_LIST_DIR} ABSOLUTE)
if(TARGET strata_discovery)
  # planner.c alone (not the whole master library): the units need no network code
  add_executable(test_discovery_units ${_disc_tests}/test_discovery_units.c ${_disc_tests}/../master/planner.c)
  target_link_libraries(test_discovery_units PRIVATE strata_discovery strata_cluster)
  add_test(NAME discovery_units COMMAND test_discovery_units)
  set_tests_properties(discovery_units PROPERTIES LABELS unit TIMEOUT 60)

  # the master's discovery options on a machine with no mDNS daemon (what most CI boxes are)
  add_test(NAME discovery_cli COMMAND sh ${_disc_tests}/test_discovery_cli.sh $<TARGET_FILE:strata-master>
           $<TARGET_FILE:strata-worker> $<TARGET_FILE:strata-gen> ${CMAKE_CURRENT_BINARY_DIR}/tmp_discovery_cli)
  set_tests_properties(discovery_cli PROPERTIES LABELS unit TIMEOUT 120)

  # several hosts on one machine: network namespaces on a private bridge, a dbus-daemon and an
  # avahi-daemon in each; needs root and `ip netns` (else it exits 77: skipped)
  add_test(NAME discovery_netns COMMAND sh ${_disc_tests}/test_discovery_netns.sh $<TARGET_FILE:strata-master>
           $<TARGET_FILE:strata-worker> $<TARGET_FILE:strata-gen> ${CMAKE_CURRENT_BINARY_DIR}/tmp_discovery_netns)
  # alone: mDNS probing and the name-conflict back-off run on timers, and one CI run that shared the
  # 2 cores with the fuzz and serving tests saw the Avahi workers not advertised in time
  set_tests_properties(discovery_netns PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 180 RUN_SERIAL TRUE)
endif()
