// Fuzz target: a safetensors file through the reader (mapped and read), then as a domain file
// (features, counts, class names) and as model weights. Any defect must be an fgvc::Error
// naming the file and the problem.
#include "emd/domain.h"
#include "fuzz_input.h"
#include "nn/models/registry.h"
#include "tensor/safetensors.h"

using namespace fgvc;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = fuzz::as_file(data, size, ".safetensors");
  for (const bool map : {true, false}) {
    fuzz::expect_clean([&] {
      const SafetensorsFile f = read_safetensors(path, map);
      for (const auto& [name, t] : f.tensors)  // read the last byte of every tensor (in bounds?)
        if (t.numel() > 0 && t.nbytes() > 0) (void)static_cast<const volatile uint8_t*>(t.data_ptr())[t.nbytes() - 1];
    });
  }
  fuzz::expect_clean([&] { emd::load_domain(path); });
  fuzz::expect_clean([&] { nn::read_model_weights(path); });
  return 0;
}
