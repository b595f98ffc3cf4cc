// Fuzz target: an image file through the loader's whole per-sample path (read, header, crop
// box, decode of the region at a reduced DCT scale, resize, flip, colour jitter, CHW), in the
// train, eval and 12-crop modes. A bad file must come back as `false` with a reason naming
// it; nothing may crash, hang or read out of bounds.
#include <vector>

#include "data/loader.h"
#include "fuzz_input.h"

using namespace fgvc;

namespace {

data::Loader& loader(data::Mode mode, const std::string& path) {
  auto make = [&](data::Mode m) {
    data::Dataset d;
    d.samples.push_back({path, 0});
    d.classes = {"only"};
    d.source = "fuzz";
    data::LoaderOptions o;
    o.batch_size = 1;
    o.size = 23;  // small and odd: every resize shrinks, some by more than 2x
    o.mode = m;
    o.warn = false;
    o.pinned = false;
    return new data::Loader(d, o);
  };
  static data::Loader* train = make(data::Mode::Train);
  static data::Loader* eval = make(data::Mode::Eval);
  static data::Loader* eval12 = make(data::Mode::Eval12);
  return mode == data::Mode::Train ? *train : mode == data::Mode::Eval ? *eval : *eval12;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::as_file(data, size, ".img");
  // The epoch picks the train transform's crop, flip and colour jitter.
  const uint64_t epoch = size > 0 ? data[size - 1] : 0;
  std::vector<float> out(12 * 3 * 23 * 23);
  for (const data::Mode mode : {data::Mode::Train, data::Mode::Eval, data::Mode::Eval12}) {
    fuzz::expect_clean([&] {
      std::string error;
      if (!loader(mode, path).load_sample(0, epoch, out.data(), &error) && error.find(path) == std::string::npos)
        std::abort();  // a skipped file must be named
    });
  }
  return 0;
}
