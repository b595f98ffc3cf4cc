// Builds against the installed package and trains one step of a tiny model.
#include <fgvc/fgvc.h>

#include <cstdio>

int main() {
  using namespace fgvc;
  Generator gen(1);
  Tensor w = randn({4, 3}, gen).set_requires_grad(true);
  const Tensor x = randn({2, 4}, gen);
  const Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 2}, {2});
  Tensor loss = cross_entropy(matmul(x, w), y, 0.1);
  backward(loss);
  std::printf("fgvc %s: loss %.6f, |grad| %.6f\n", FGVC_VERSION, loss.item<double>(),
              kernels::sum(kernels::mul(w.grad(), w.grad())).item<double>());
  return w.grad().defined() ? 0 : 1;
}
