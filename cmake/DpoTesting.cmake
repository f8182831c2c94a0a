# dpo_add_test(NAME name SOURCES a_test.cc ... [LIBS libs...] [TORCH] [MPI_RANKS n])
# One GoogleTest executable per source area, registered with ctest. LIBS names the area's own
# library (not dpo_core), so the test fails to link when the area calls past its layer. TORCH
# reuses dpo_tensor's precompiled torch headers, so a test file that includes torch compiles in
# seconds. MPI_RANKS runs the whole executable as one ctest test under `mpirun -np n` (real
# ranks, real MPI).
include(GoogleTest)
find_package(GTest REQUIRED)
function(dpo_add_test)
  cmake_parse_arguments(T "TORCH" "NAME;MPI_RANKS" "SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  if(T_TORCH)
    target_link_libraries(${T_NAME} PRIVATE dpo_tensor)
    target_precompile_headers(${T_NAME} REUSE_FROM dpo_tensor)
  endif()
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  if(T_MPI_RANKS)
    add_test(NAME ${T_NAME} COMMAND ${MPIEXEC_EXECUTABLE} -np ${T_MPI_RANKS} --oversubscribe
             --bind-to none $<TARGET_FILE:${T_NAME}> WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
    set_tests_properties(${T_NAME} PROPERTIES TIMEOUT 300 ENVIRONMENT
      "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMP_NUM_THREADS=1;DPO_SOURCE_DIR=${CMAKE_SOURCE_DIR};DPO_BINARY_DIR=${CMAKE_BINARY_DIR}")
    return()
  endif()
  gtest_discover_tests(${T_NAME} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                       PROPERTIES ENVIRONMENT "DPO_SOURCE_DIR=${CMAKE_SOURCE_DIR};DPO_BINARY_DIR=${CMAKE_BINARY_DIR}"
                       DISCOVERY_TIMEOUT 60)
endfunction()
