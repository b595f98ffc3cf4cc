// Builds against the installed package and trains one step of a tiny model.
#include <fgvc/fgvc.h>

#include <cmath>
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
  // The paper's other half: the exact EMD (2 x 2: move 0.25 of the mass a distance 1).
  const double cost[] = {0, 1, 1, 0};
  const emd::Result r = emd::solve(cost, 2, 2, {0.75, 0.25}, {0.5, 0.5});
  std::printf("emd %.6f\n", r.cost);
  return w.grad().defined() && std::abs(r.cost - 0.25) < 1e-12 ? 0 : 1;
}
