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

#include <ATen/Context.h>

#include <cstdint>
#include <mutex>
#include <utility>
#include <vector>

namespace iat {
namespace detail {

/// Which slice of the global batch this thread's batch-shaped draws take (set by GlobalDrawSlice), or,
/// with `row_seeds` set (by RowSeededDraws), the seed of each row's own draw.
struct BatchDrawSlice {
  int rank = 0;
  int world_size = 1;
  const std::vector<uint64_t>* row_seeds = nullptr;
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
  if (s.row_seeds != nullptr && like.dim() > 0 && like.size(0) == static_cast<int64_t>(s.row_seeds->size())) {
    // Row r from the default generator of like's device, seeded with row_seeds[r]: each row's numbers
    // depend on its seed alone, not on which rows share the batch.
    auto gen = at::globalContext().defaultGenerator(like.device());
    std::vector<torch::Tensor> rows;
    for (int64_t r = 0; r < like.size(0); ++r) {
      {
        std::lock_guard<std::mutex> lock(gen.mutex());
        gen.set_current_seed((*s.row_seeds)[static_cast<size_t>(r)]);
      }
      rows.push_back(draw(like.narrow(0, r, 1)));
    }
    return torch::cat(rows);
  }
  if (s.world_size == 1 || like.dim() == 0) return std::forward<Draw>(draw)(like);
  std::vector<int64_t> sizes = like.sizes().vec();
  const int64_t rows = sizes[0];
  sizes[0] = rows * s.world_size;
  auto global = torch::empty(sizes, like.options().memory_format(like.suggest_memory_format()));
  return std::forward<Draw>(draw)(global).narrow(0, s.rank * rows, rows);
}

/// For its scope, makes the batch-shaped draws of a batch of seeds.size() rows row by row, row r from the
/// default generator of the batch's device seeded with seeds[r] (and no GlobalDrawSlice slicing): the
/// numbers of a row then depend on its seed only. It moves the generators: save and restore their states
/// around it to keep the run's stream. iat::train::one_off_loss makes the inverse examples of the rows T'
/// never visited under it, so that they do not depend on how those rows fall into batches or ranks.
class RowSeededDraws {
 public:
  explicit RowSeededDraws(std::vector<uint64_t> seeds) : seeds_(std::move(seeds)), previous_(batch_draw_slice()) {
    batch_draw_slice() = BatchDrawSlice{0, 1, &seeds_};
  }
  ~RowSeededDraws() { batch_draw_slice() = previous_; }
  RowSeededDraws(const RowSeededDraws&) = delete;
  RowSeededDraws& operator=(const RowSeededDraws&) = delete;

 private:
  std::vector<uint64_t> seeds_;
  BatchDrawSlice previous_;
};

}  // namespace detail
}  // namespace iat
