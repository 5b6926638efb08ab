// The reference for the overhead benchmark: the same forwards as bench/overhead.ts, in a C++ loop without Node.
// Usage: forward_loop MODULE ITERATIONS WARMUP SIDE COND_DIM  -> prints {"microsecondsPerCall": ...}
#include <ATen/Parallel.h>
#include <torch/script.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: forward_loop MODULE ITERATIONS WARMUP SIDE COND_DIM\n");
    return 2;
  }
  const int iterations = std::atoi(argv[2]), warmup = std::atoi(argv[3]);
  const int64_t side = std::atoll(argv[4]), cond_dim = std::atoll(argv[5]);
  c10::InferenceMode inference;
  torch::jit::Module module = torch::jit::load(argv[1]);
  module.eval();
  std::vector<c10::IValue> inputs = {torch::randn({1, 4, side, side}), torch::full({1}, 500, torch::kLong),
                                     torch::randn({1, 77, cond_dim})};
  for (int i = 0; i < warmup; ++i) module.forward(inputs);
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) module.forward(inputs);
  std::chrono::duration<double, std::micro> elapsed = std::chrono::steady_clock::now() - start;
  std::printf("{\"microsecondsPerCall\": %.3f, \"threads\": %d}\n", elapsed.count() / iterations, at::get_num_threads());
  return 0;
}
