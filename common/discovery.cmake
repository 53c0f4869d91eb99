# Zero-config discovery (issue 5): mDNS/DNS-SD through libavahi-client and the dns_sd API.
# Included by master/cluster.cmake, after the strata-master and strata-worker targets exist.
#   Linux: avahi (pkg-config avahi-client) and dnssd (Avahi's compat library, avahi-compat-libdns_sd)
#   Apple: dnssd from the system (dns_sd.h is in libSystem)
# Without either, discovery reports that it is not built in and --topology still works.
get_filename_component(_disc_root ${CMAKE_CURRENT_LIST_DIR}/.. ABSOLUTE)

add_library(strata_discovery STATIC ${_disc_root}/common/discovery.c)
target_include_directories(strata_discovery PUBLIC ${_disc_root})
target_link_libraries(strata_discovery PUBLIC strata_kernels Threads::Threads)

pkg_check_modules(AVAHI_CLIENT IMPORTED_TARGET avahi-client)
if(AVAHI_CLIENT_FOUND)
  target_sources(strata_discovery PRIVATE ${_disc_root}/common/discovery_avahi.c)
  target_compile_definitions(strata_discovery PRIVATE STRATA_HAVE_AVAHI=1)
  target_link_libraries(strata_discovery PUBLIC PkgConfig::AVAHI_CLIENT)
endif()

if(APPLE)
  target_sources(strata_discovery PRIVATE ${_disc_root}/common/discovery_dnssd.c)
  target_compile_definitions(strata_discovery PRIVATE STRATA_HAVE_DNSSD=1)
else()
  pkg_check_modules(AVAHI_DNSSD IMPORTED_TARGET avahi-compat-libdns_sd)
  if(AVAHI_DNSSD_FOUND)
    target_sources(strata_discovery PRIVATE ${_disc_root}/common/discovery_dnssd.c)
    target_compile_definitions(strata_discovery PRIVATE STRATA_HAVE_DNSSD=1)
    target_link_libraries(strata_discovery PUBLIC PkgConfig::AVAHI_DNSSD)
  endif()
endif()
message(STATUS "strata discovery: avahi ${AVAHI_CLIENT_FOUND}, dnssd ${AVAHI_DNSSD_FOUND}${APPLE}")

# the worker advertises itself; the master browses, plans (master/planner.c) and measures its
# own speed the way a worker does when it keeps layers (exec_measure_speed)
target_link_libraries(strata-worker PRIVATE strata_discovery)
target_sources(strata-master PRIVATE ${_disc_root}/master/discover.c ${_disc_root}/worker/executor.c)
target_link_libraries(strata-master PRIVATE strata_discovery)
target_compile_definitions(strata-master PRIVATE STRATA_HAVE_DISCOVERY=1)
target_compile_definitions(strata-worker PRIVATE STRATA_HAVE_DISCOVERY=1)
