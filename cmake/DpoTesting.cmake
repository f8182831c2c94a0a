# dpo_add_test(NAME name SOURCES a_test.cc ... [LIBS libs...] [TORCH])
# One GoogleTest executable per source area, registered with ctest. TORCH reuses dpo_engine's
# precompiled torch headers, so a test file that includes torch compiles in seconds.
include(GoogleTest)
find_package(GTest REQUIRED)
function(dpo_add_test)
  cmake_parse_arguments(T "TORCH" "NAME" "SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  if(T_TORCH)
    target_link_libraries(${T_NAME} PRIVATE dpo_engine)
    target_precompile_headers(${T_NAME} REUSE_FROM dpo_engine)
  endif()
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  gtest_discover_tests(${T_NAME} WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                       PROPERTIES ENVIRONMENT "DPO_SOURCE_DIR=${CMAKE_SOURCE_DIR};DPO_BINARY_DIR=${CMAKE_BINARY_DIR}"
                       DISCOVERY_TIMEOUT 60)
endfunction()
