// Fuzz target: the same bytes as an iNaturalist-style COCO JSON file and as a list file.
// A malformed file must be an fgvc::Error naming it (and the line, for a list file).
#include "data/dataset.h"
#include "fuzz_input.h"

using namespace fgvc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::expect_clean([&] { data::load_coco_json(fuzz::as_file(data, size, ".json")); });
  fuzz::expect_clean([&] { data::load_list_file(fuzz::as_file(data, size, ".txt")); });
  return 0;
}
