# CMake toolchain file: cross-compile binmx for 64-bit ARM Linux with Debian's cross compiler
# (apt-get install g++-aarch64-linux-gnu; OpenMP comes with it as the aarch64 libgomp).
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
#         -DBINMX_PYTHON=OFF -DBINMX_TESTS=ON
#   cmake --build build-arm64 -j2
# Run the results on the board, or here under user-mode emulation:
#   qemu-aarch64 -L /usr/aarch64-linux-gnu build-arm64/src/xnor_gemm/xnor_gemm_test
# Another triple or compiler prefix: -DBINMX_CROSS_PREFIX=aarch64-none-linux-gnu-.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(BINMX_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross tools")
set(CMAKE_C_COMPILER ${BINMX_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${BINMX_CROSS_PREFIX}g++)

# Debian installs the target's headers and libraries under /usr/aarch64-linux-gnu.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# try_run / check programs cannot run on the build machine without an emulator; name it when
# qemu-aarch64 is installed so that anything that must run a test program can.
find_program(BINMX_QEMU_AARCH64 qemu-aarch64)
if(BINMX_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${BINMX_QEMU_AARCH64} -L /usr/aarch64-linux-gnu)
endif()
