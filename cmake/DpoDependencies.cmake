# Finds the project's dependencies and defines:
#   the torch-free libraries (PCRE2, utf8proc, zlib, nlohmann-json, yaml-cpp, CLI11), which each area
#   links as it needs them (common/*/CMakeLists.txt)
#   Torch (torch target), MPI::MPI_CXX, DPO_WITH_CUDA / DPO_WITH_NCCL, DPO_HAVE_SERVICE_DEPS
find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(Threads REQUIRED)
find_package(CLI11 2.1 CONFIG REQUIRED)  # every program's flags (common/util/cli.h)

# A DPO_TORCH_FREE build (the core and the job service) needs neither torch nor MPI.
if(NOT DPO_TORCH_FREE)
  # LibTorch comes from the venv's torch wheel (pinned; see scripts/requirements.txt).
  if(NOT Torch_DIR)
    execute_process(COMMAND "${DPO_PYTHON}" -c "import torch;print(torch.utils.cmake_prefix_path)"
                    OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                    RESULT_VARIABLE _torch_rc)
    if(NOT _torch_rc EQUAL 0)
      message(FATAL_ERROR "Cannot import torch with ${DPO_PYTHON}; run scripts/setup.sh "
                          "or pass -DDPO_PYTHON=/path/to/python")
    endif()
    list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
  endif()

  # CUDA: compiled whenever the toolkit is present (the wheel is CUDA 13.0, as is the toolkit).
  include(CheckLanguage)
  check_language(CUDA)
  find_package(CUDAToolkit QUIET)
  if(CMAKE_CUDA_COMPILER AND CUDAToolkit_FOUND)
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
      set(ENV{TORCH_CUDA_ARCH_LIST} "9.0")
    endif()
    enable_language(CUDA)
    set(DPO_WITH_CUDA ON)
  else()
    set(DPO_WITH_CUDA OFF)
  endif()
  find_package(Torch REQUIRED)
  find_package(MPI REQUIRED COMPONENTS CXX)

  set(DPO_WITH_NCCL OFF)
  if(DPO_WITH_CUDA)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include /usr/local/include)
    find_library(NCCL_LIBRARY NAMES nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/local/cuda/lib64
                 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      set(DPO_WITH_NCCL ON)
      add_library(dpo_nccl INTERFACE)
      target_include_directories(dpo_nccl INTERFACE ${NCCL_INCLUDE_DIR})
      target_link_libraries(dpo_nccl INTERFACE ${NCCL_LIBRARY} CUDA::cudart)
    endif()
  endif()
  message(STATUS "dpo: CUDA=${DPO_WITH_CUDA} NCCL=${DPO_WITH_NCCL} torch=${Torch_VERSION}")
endif()

# Service parts: optional, so the engine builds where gRPC is missing (the GPU machine).
find_package(Protobuf QUIET)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin)
pkg_check_modules(GRPCPP QUIET IMPORTED_TARGET grpc++)
pkg_check_modules(SQLITE3 QUIET IMPORTED_TARGET sqlite3)
find_library(CIVETWEB_LIBRARY civetweb)
find_library(GRPCPP_REFLECTION_LIBRARY grpc++_reflection)
find_package(OpenSSL QUIET COMPONENTS Crypto)  # token hashes; gRPC links it already
if(Protobuf_FOUND AND GRPC_CPP_PLUGIN AND GRPCPP_FOUND AND SQLITE3_FOUND AND CIVETWEB_LIBRARY AND
   GRPCPP_REFLECTION_LIBRARY AND OpenSSL_FOUND)
  set(DPO_HAVE_SERVICE_DEPS ON)
else()
  set(DPO_HAVE_SERVICE_DEPS OFF)
endif()
message(STATUS "dpo: service deps (gRPC, SQLite, civetweb, OpenSSL) = ${DPO_HAVE_SERVICE_DEPS}")
