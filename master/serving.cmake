# Serving (issue 9): generation with speculative decoding (master/generate.c, batch.c).
get_filename_component(_sv_root ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)
add_library(strata_generate STATIC ${_sv_root}/master/generate.c ${_sv_root}/master/batch.c)
target_link_libraries(strata_generate PUBLIC strata_common)
target_link_libraries(strata-master PRIVATE strata_generate)
