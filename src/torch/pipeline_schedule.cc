// The pipeline schedules (sparselink/torch/pipeline.hpp): which forwards and backwards a rank
// runs in a step, in order.
#include <algorithm>

#include "sparselink/torch/pipeline.hpp"

namespace sparselink::torch_adapter {

Result<Schedule> ParseSchedule(std::string_view name) {
  if (const auto* row = FindName(kScheduleNames, name)) return row->value;
  return FieldError(ErrorCode::kInvalidArgument, "--schedule", name,
                    "unknown schedule (one of " + NameChoices(kScheduleNames) + ")");
}

std::vector<PipelineOp> ScheduleOps(Schedule schedule, int stages, int rank, int micro_batches) {
  std::vector<PipelineOp> ops;
  ops.reserve(2 * static_cast<size_t>(micro_batches));
  if (schedule == Schedule::kGPipe) {
    for (int m = 0; m < micro_batches; ++m) ops.push_back({true, m});
    for (int m = 0; m < micro_batches; ++m) ops.push_back({false, m});
    return ops;
  }
  // 1F1B: the forwards that fill the pipeline below this rank, then one of each in turn.
  const int warmup = std::min(std::max(stages - rank - 1, 0), micro_batches);
  for (int m = 0; m < warmup; ++m) ops.push_back({true, m});
  for (int i = 0; i < micro_batches - warmup; ++i) {
    ops.push_back({true, warmup + i});
    ops.push_back({false, i});
  }
  for (int m = micro_batches - warmup; m < micro_batches; ++m) ops.push_back({false, m});
  return ops;
}

double BubbleFraction(int stages, int micro_batches) {
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

}  // namespace sparselink::torch_adapter
