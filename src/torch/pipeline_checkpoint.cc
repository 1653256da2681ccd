// A pipeline rank's checkpoints (pipeline_rank.hpp): each rank writes its own file after an
// epoch, and a resumed job goes on only when every rank has its file and all are of the same
// epoch. A job killed while its ranks were writing can leave files of two epochs; a rank that
// went on from its own file would then pair its stage with a neighbour's of another epoch,
// and the run would go on wrong without a word. So the ranks tell each other what they read
// (an all-gather of each one's epoch or error) and all stop with the same line when they
// disagree.
#include <algorithm>
#include <string>

#include "torch/pipeline_rank.hpp"
#include "torch/state_bytes.hpp"

namespace sparselink::torch_adapter::internal {

Status PipelineRank::SaveState(StateWriter& w) const {
  if (!in_flight_.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "rank state", rank_,
                      "a micro-batch is in flight; save between steps");
  }
  w.I64(step_);
  w.I64(max_rows_);
  w.I64(packets_per_step_);
  w.F64(idle_seconds_);
  w.U8(sender_ ? 1 : 0);
  if (sender_) {
    SaveReportCounters(sender_report_, w);
    SPARSELINK_RETURN_IF_ERROR(sender_->SaveState(w));
  }
  w.U8(receiver_ ? 1 : 0);
  if (receiver_) {
    SaveReportCounters(receiver_report_, w);
    SPARSELINK_RETURN_IF_ERROR(receiver_->SaveState(w));
  }
  return Status::Ok();
}

Status PipelineRank::LoadState(StateReader& r) {
  SPARSELINK_RETURN_IF_ERROR(r.I64("step", &step_));
  SPARSELINK_RETURN_IF_ERROR(r.I64("max_rows", &max_rows_));
  SPARSELINK_RETURN_IF_ERROR(r.I64("packets_per_step", &packets_per_step_));
  SPARSELINK_RETURN_IF_ERROR(r.F64("idle_seconds", &idle_seconds_));
  if (packets_per_step_ < 1 || max_rows_ < 0 || step_ < 0) {
    return FieldError(ErrorCode::kCorruptPacket, r.what() + ".packets_per_step", packets_per_step_,
                      "must be >= 1 (with rows and step >= 0)");
  }
  for (const bool sender : {true, false}) {
    uint8_t present = 0;
    SPARSELINK_RETURN_IF_ERROR(r.U8(sender ? "sender" : "receiver", &present));
    const bool here = sender ? sender_ != nullptr : receiver_ != nullptr;
    if ((present != 0) != here) {
      return FieldError(ErrorCode::kCorruptPacket, r.what() + (sender ? ".sender" : ".receiver"),
                        int(present),
                        std::string("this rank ") + (here ? "has" : "has no") + " such end");
    }
    if (!here) continue;
    if (sender) {
      SPARSELINK_RETURN_IF_ERROR(LoadReportCounters(r, &sender_report_));
      SPARSELINK_RETURN_IF_ERROR(sender_->LoadState(r));
    } else {
      SPARSELINK_RETURN_IF_ERROR(LoadReportCounters(r, &receiver_report_));
      SPARSELINK_RETURN_IF_ERROR(receiver_->LoadState(r));
    }
  }
  return r.Done();
}

Status SaveStage(const PipelineRank& rank, const PipelineOptions& options,
                 const std::string& config, const OwnStages& own,
                 const torch::optim::Optimizer& optimizer, const torch::Generator& shuffle,
                 const RunProgress& run, int rank_index, int world_size) {
  Checkpoint checkpoint{.rank = static_cast<uint32_t>(rank_index),
                        .world_size = static_cast<uint32_t>(world_size),
                        .epoch = static_cast<uint32_t>(run.epoch),
                        .config = config};
  SPARSELINK_RETURN_IF_ERROR(SaveRun(own, optimizer, shuffle, run, &checkpoint));
  StateWriter w;
  SPARSELINK_RETURN_IF_ERROR(rank.SaveState(w));
  checkpoint.Add("rank", w.Take());
  return WriteCheckpoint(CheckpointPath(options.train.checkpoint.dir, rank_index), checkpoint);
}

namespace {

// Every rank's own read, agreed on: each rank's verdict (its epoch, or its error) is gathered,
// and the first refusal, or a disagreement about the epoch, fails every rank alike.
Result<Checkpoint> ReadAgreed(Transport& transport, const PipelineOptions& options,
                              const std::string& config) {
  const std::filesystem::path& dir = options.train.checkpoint.resume;
  const int me = transport.rank();
  auto mine = ReadCheckpoint(CheckpointPath(dir, me), static_cast<uint32_t>(me),
                             static_cast<uint32_t>(transport.world_size()), config);
  StateWriter verdict;
  verdict.U8(static_cast<uint8_t>(mine.status().code()));
  verdict.U32(mine.ok() ? mine->epoch : 0);
  verdict.String(mine.status().message());
  const std::vector<uint8_t> bytes = verdict.Take();
  SPARSELINK_ASSIGN_OR_RETURN(auto all, transport.AllGather(bytes, options.timeout));
  std::string epochs;
  bool agree = true;
  uint32_t first_epoch = 0;
  for (size_t r = 0; r < all.size(); ++r) {
    StateReader read(all[r], "checkpoint verdict of rank " + std::to_string(r));
    uint8_t code = 0;
    uint32_t epoch = 0;
    std::string message;
    SPARSELINK_RETURN_IF_ERROR(read.U8("code", &code));
    SPARSELINK_RETURN_IF_ERROR(read.U32("epoch", &epoch));
    SPARSELINK_RETURN_IF_ERROR(read.String("message", &message));
    if (code != 0) {
      const auto last = static_cast<uint8_t>(ErrorCode::kIo);
      return Status(static_cast<ErrorCode>(std::min(code, last)), message);
    }
    if (r == 0) first_epoch = epoch;
    agree = agree && epoch == first_epoch;
    epochs +=
        (r > 0 ? ", rank " : "rank ") + std::to_string(r) + " after epoch " + std::to_string(epoch);
  }
  if (!agree) {
    return FieldError(ErrorCode::kInvalidArgument, "checkpoint", dir.string(),
                      "its ranks' files are of different epochs (" + epochs +
                          "): the job stopped while they were written; resume needs every "
                          "rank's file of one epoch");
  }
  return mine;
}

}  // namespace

Status ResumeStage(Transport& transport, PipelineRank& rank, const PipelineOptions& options,
                   const std::string& config, const OwnStages& own,
                   torch::optim::Optimizer& optimizer, torch::Generator& shuffle,
                   RunProgress* run) {
  SPARSELINK_ASSIGN_OR_RETURN(const Checkpoint checkpoint, ReadAgreed(transport, options, config));
  const std::filesystem::path path =
      CheckpointPath(options.train.checkpoint.resume, transport.rank());
  SPARSELINK_RETURN_IF_ERROR(
      LoadRun(checkpoint, path, options.train, own, optimizer, shuffle, run));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* bytes, Section(checkpoint, path, "rank"));
  StateReader r(*bytes, "rank");
  if (Status loaded = rank.LoadState(r); !loaded.ok()) {
    return FieldError(loaded.code(), "checkpoint", path.string(), loaded.message());
  }
  return Status::Ok();
}

}  // namespace sparselink::torch_adapter::internal
