#include "tensor/device.h"

#include "tensor/error.h"

namespace fgvc {

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(const std::string& name) {
  if (name == "cpu") return cpu();
  if (name == "cuda") return cuda(0);
  if (name.rfind("cuda:", 0) == 0) {
    const std::string idx = name.substr(5);
    // At most 4 digits: an index that large is already no device, and stoi cannot overflow.
    FGVC_CHECK(!idx.empty() && idx.size() <= 4 && idx.find_first_not_of("0123456789") == std::string::npos, "Device",
               "bad device name '", name, "' (expected cpu, cuda or cuda:N)");
    return cuda(std::stoi(idx));
  }
  throw Error("Device: bad device name '" + name + "' (expected cpu, cuda or cuda:N)");
}

}  // namespace fgvc
