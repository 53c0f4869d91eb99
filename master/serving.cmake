# Serving (issue 9): generation with speculative decoding (master/generate.c, batch.c) and the
# OpenAI-style HTTP API (master/http*.c, libmicrohttpd). Included from the top CMakeLists.txt
# (or, until it is listed there, from tests/serving.cmake).
pkg_check_modules(MHD REQUIRED IMPORTED_TARGET libmicrohttpd)
get_filename_component(_sv_root ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
# several sessions in flight through the chain (engine_cluster's async ops; pipeline.c sets them)
get_target_property(_sv_cluster_sources strata_master_cluster SOURCES)
if(NOT "${_sv_root}/master/pipeline_async.c" IN_LIST _sv_cluster_sources)
  target_sources(strata_master_cluster PRIVATE ${_sv_root}/master/pipeline_async.c)
endif()
add_library(strata_generate STATIC ${_sv_root}/master/generate.c ${_sv_root}/master/batch.c)
target_link_libraries(strata_generate PUBLIC strata_common)
target_link_libraries(strata-master PRIVATE strata_generate)

# the server; http_main uses the CLI's cluster options (cluster_cli.c, engine_local.c)
add_library(strata_http STATIC ${_sv_root}/master/http.c ${_sv_root}/master/http_api.c ${_sv_root}/master/http_main.c)
target_link_libraries(strata_http PUBLIC strata_generate strata_master_cluster PkgConfig::MHD Threads::Threads)
target_link_libraries(strata-master PRIVATE strata_http)
add_executable(strata-serve ${_sv_root}/master/serve_main.c ${_sv_root}/master/cluster_cli.c ${_sv_root}/master/engine_local.c)
target_link_libraries(strata-serve PRIVATE strata_http)
