# Metal: the real backend on Apple; everywhere else the MSL-on-CPU harness (metal-sim) and a
# compile check of the Objective-C-runtime host code, so both halves meet a compiler in CI.
set(STRATA_METAL_DIR ${CMAKE_CURRENT_LIST_DIR})
set(STRATA_METAL_SOURCES quant.metal norm.metal attention.metal elementwise.metal)
set(STRATA_METAL_DEPS)
foreach(f ${STRATA_METAL_SOURCES} msl_params.h msl_common.h embed_msl.cmake)
  list(APPEND STRATA_METAL_DEPS ${STRATA_METAL_DIR}/${f})
endforeach()

# the MSL source as a C string, for newLibraryWithSource at run time
set(STRATA_METAL_EMBED ${CMAKE_BINARY_DIR}/generated/metal_source.c)
string(REPLACE ";" "," STRATA_METAL_SOURCES_CSV "${STRATA_METAL_SOURCES}")
add_custom_command(
  OUTPUT ${STRATA_METAL_EMBED}
  COMMAND ${CMAKE_COMMAND} -DOUT=${STRATA_METAL_EMBED} -DDIR=${STRATA_METAL_DIR}
          -DSOURCES=${STRATA_METAL_SOURCES_CSV} -P ${STRATA_METAL_DIR}/embed_msl.cmake
  DEPENDS ${STRATA_METAL_DEPS}
  VERBATIM
  COMMENT "Embedding the Metal kernels")

if(APPLE)
  add_library(strata_metal OBJECT
    ${STRATA_METAL_DIR}/metal_backend.c
    ${STRATA_METAL_DIR}/metal_ops.c
    ${STRATA_METAL_EMBED})
  target_include_directories(strata_metal PRIVATE ${CMAKE_SOURCE_DIR})
  # backend.c reaches backend_metal_new through a weak reference, which pulls nothing out of a
  # static archive: hand the objects to every program that links strata_kernels instead.
  target_sources(strata_kernels INTERFACE $<TARGET_OBJECTS:strata_metal>)
  target_link_libraries(strata_kernels INTERFACE "-framework Metal" "-framework Foundation" objc)
else()
  # metal-sim: the op layer and the kernels, run on the CPU (tests only)
  add_library(strata_metal_sim STATIC
    ${STRATA_METAL_DIR}/metal_ops.c
    ${STRATA_METAL_DIR}/msl_sim.cpp
    ${STRATA_METAL_DIR}/metal_sim.cpp)
  target_include_directories(strata_metal_sim PUBLIC ${CMAKE_SOURCE_DIR}
                             PRIVATE ${STRATA_METAL_DIR}/shim)
  target_link_libraries(strata_metal_sim PUBLIC strata_common)
  set_target_properties(strata_metal_sim PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON
                        CXX_EXTENSIONS OFF)
  # MSL attributes ([[buffer(n)]], [[host_name]]) mean nothing to g++; kernels need not use
  # every thread id they are handed
  target_compile_options(strata_metal_sim PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wno-attributes -Wno-unused-parameter>)

  # compile check of the host code against declarations of the runtime (never linked or run)
  add_library(strata_metal_host_check OBJECT
    ${STRATA_METAL_DIR}/metal_backend.c
    ${STRATA_METAL_EMBED})
  target_include_directories(strata_metal_host_check PRIVATE ${CMAKE_SOURCE_DIR})
endif()
