// The entry points of the fuzz targets as this test binary compiles them: CMakeLists.txt renames
// each tests/fuzz/<name>.cc's LLVMFuzzerTestOneInput to <name>_TestOneInput and includes this
// header ahead of the file, so each definition is checked against its declaration here.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
int frame_fuzz_TestOneInput(const uint8_t* data, size_t size);
int manifest_fuzz_TestOneInput(const uint8_t* data, size_t size);
int message_fuzz_TestOneInput(const uint8_t* data, size_t size);
int policy_fuzz_TestOneInput(const uint8_t* data, size_t size);
int seal_fuzz_TestOneInput(const uint8_t* data, size_t size);
int token_fuzz_TestOneInput(const uint8_t* data, size_t size);
}
