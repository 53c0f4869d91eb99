# CMake toolchain for Debian's aarch64 cross compiler (gcc-aarch64-linux-gnu), used by
# tests/test_neon_qemu.sh with STRATA_ENGINE_ONLY: the arm64 jansson comes from multiarch
# (libjansson-dev:arm64), whose header lies in /usr/include, after the cross sysroot's own.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_C_FLAGS_INIT "-idirafter /usr/include")
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "")
# static: qemu-aarch64 7.2 (Debian 12) hangs a dynamically linked guest in its first pthread_create
# on this project's CI machines; a static one runs
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static")
