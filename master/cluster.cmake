# The cluster: protocol (protobuf-c), wire, topology, planner, bundler, pipeline, worker.
pkg_check_modules(ZMQ REQUIRED IMPORTED_TARGET libzmq)
pkg_check_modules(PROTOBUFC REQUIRED IMPORTED_TARGET libprotobuf-c)
pkg_check_modules(YAML REQUIRED IMPORTED_TARGET yaml-0.1)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
find_program(PROTOC_C protoc-c REQUIRED)
get_filename_component(STRATA_ROOT ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)

# proto/strata.proto -> <build>/proto/strata.pb-c.{c,h}, included as "proto/strata.pb-c.h"
set(STRATA_PROTO_OUT ${CMAKE_BINARY_DIR}/proto)
add_custom_command(
  OUTPUT ${STRATA_PROTO_OUT}/strata.pb-c.c ${STRATA_PROTO_OUT}/strata.pb-c.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${STRATA_PROTO_OUT}
  COMMAND ${PROTOC_C} --c_out=${STRATA_PROTO_OUT} -I${STRATA_ROOT}/proto ${STRATA_ROOT}/proto/strata.proto
  DEPENDS ${STRATA_ROOT}/proto/strata.proto
  COMMENT "protoc-c proto/strata.proto")
add_library(strata_proto STATIC ${STRATA_PROTO_OUT}/strata.pb-c.c)
target_include_directories(strata_proto PUBLIC ${CMAKE_BINARY_DIR})
target_link_libraries(strata_proto PUBLIC PkgConfig::PROTOBUFC)

# shared by master, worker and tests
add_library(strata_cluster STATIC ${STRATA_ROOT}/common/wire.c ${STRATA_ROOT}/common/topology.c ${STRATA_ROOT}/common/sha256.c
  ${STRATA_ROOT}/common/curve.c ${STRATA_ROOT}/common/linkmon.c)
target_link_libraries(strata_cluster PUBLIC strata_proto strata_common PkgConfig::ZMQ PkgConfig::YAML PkgConfig::SODIUM)

# the master's side (a library so that the unit tests link the planner and bundler)
add_library(strata_master_cluster STATIC ${STRATA_ROOT}/master/planner.c ${STRATA_ROOT}/master/bundler.c ${STRATA_ROOT}/master/pipeline.c
  ${STRATA_ROOT}/master/failover.c ${STRATA_ROOT}/master/pipeline_async.c)
target_link_libraries(strata_master_cluster PUBLIC strata_cluster)
target_sources(strata-master PRIVATE ${STRATA_ROOT}/master/cluster_cli.c)
target_link_libraries(strata-master PRIVATE strata_master_cluster)

add_executable(strata-worker ${STRATA_ROOT}/worker/main.c ${STRATA_ROOT}/worker/cache.c ${STRATA_ROOT}/worker/executor.c
  ${STRATA_ROOT}/worker/zap.c)
target_link_libraries(strata-worker PRIVATE strata_cluster)
include(${STRATA_ROOT}/common/discovery.cmake OPTIONAL) # mDNS advertising and browsing (issue 5)
