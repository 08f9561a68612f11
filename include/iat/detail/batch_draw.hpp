#pragma once
/// \file
/// Batch-shaped random draws that data parallelism can slice: every random start, noise and inverse start a
/// training step draws for its batch (PGD, FGSM, N-FGSM, the inverse attack, GradAlign) goes through
/// iat::detail::draw_for_batch. In one process that is the draw itself. Inside an
/// iat::distributed::GlobalDrawSlice scope (rank r of W) each such draw is made for the global batch — W
/// times the rank's rows, the shape one process would draw — and rank r keeps its rows [r·n, (r+1)·n), so
/// the numbers are one process's and every rank's generator ends where one process's would, whatever the
/// generator, the device or the number of draws in the step. Floor 0: LibTorch's tensors only.

#include <torch/types.h>

#include <utility>
#include <vector>

namespace iat {
namespace detail {

/// Which slice of the global batch this thread's batch-shaped draws take (set by GlobalDrawSlice).
struct BatchDrawSlice {
  int rank = 0;
  int world_size = 1;
};

inline BatchDrawSlice& batch_draw_slice() {
  thread_local BatchDrawSlice slice;
  return slice;
}

/// `draw(like)` for a draw shaped like the batch `like` (rows along dim 0): `draw` must use `like`'s shape,
/// dtype, device and memory format only, never its values. Inside a GlobalDrawSlice scope it runs on a
/// template W times as tall and returns this rank's rows of the result.
///
/// **Example**
/// \code
/// auto noise = iat::detail::draw_for_batch(x0, [&](const torch::Tensor& t) { return torch::empty_like(t).uniform_(-eps, eps); });
/// \endcode
template <typename Draw>
torch::Tensor draw_for_batch(const torch::Tensor& like, Draw&& draw) {
  const BatchDrawSlice s = batch_draw_slice();
  if (s.world_size == 1 || like.dim() == 0) return std::forward<Draw>(draw)(like);
  std::vector<int64_t> sizes = like.sizes().vec();
  const int64_t rows = sizes[0];
  sizes[0] = rows * s.world_size;
  auto global = torch::empty(sizes, like.options().memory_format(like.suggest_memory_format()));
  return std::forward<Draw>(draw)(global).narrow(0, s.rank * rows, rows);
}

}  // namespace detail
}  // namespace iat
