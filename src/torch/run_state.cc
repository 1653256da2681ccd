// A run's checkpoint apart from its boundaries (run_state.hpp). Tensors go through LibTorch's
// own archives (torch::serialize, a zip of raw tensor bytes), which restore every bit and map
// the optimizer's state onto the parameters by position; the rest is our little-endian fields.
// The generators' states are LibTorch's opaque byte tensors, handed back unchanged.
#include "torch/run_state.hpp"

#include <xxhash.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "torch/state_bytes.hpp"

namespace sparselink::torch_adapter::internal {
namespace {

std::string Line(const std::string& key, const std::string& value) {
  return key + "=" + value + "\n";
}
std::string Line(const std::string& key, double value) {
  char text[40];
  std::snprintf(text, sizeof text, "%.17g", value);
  return Line(key, std::string(text));
}
std::string Line(const std::string& key, int64_t value) { return Line(key, std::to_string(value)); }

std::string Hex(uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
  return text;
}

// The names and sizes of the own stages' parameters and buffers.
uint64_t ShapesHash(const OwnStages& own) {
  std::string shapes;
  for (size_t s = own.first; s < own.end; ++s) {
    const torch::nn::Sequential& stage = (*own.stages)[s];
    for (const auto& tensors : {stage->named_parameters(true), stage->named_buffers(true)}) {
      for (const auto& item : tensors) {
        shapes += std::to_string(s) + "." + item.key() + ":";
        for (int64_t d : item.value().sizes()) shapes += std::to_string(d) + "x";
        shapes += ";";
      }
    }
  }
  return XXH3_64bits(shapes.data(), shapes.size());
}

uint64_t DataHash(const std::vector<torch::Tensor>& tensors) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  for (const torch::Tensor& t : tensors) {
    const torch::Tensor c = t.contiguous();
    XXH3_64bits_update(state, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
  }
  const uint64_t hash = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return hash;
}

std::vector<uint8_t> ArchiveBytes(torch::serialize::OutputArchive& archive) {
  std::ostringstream out;
  archive.save_to(out);
  const std::string text = out.str();
  return std::vector<uint8_t>(text.begin(), text.end());
}

void LoadArchive(const std::vector<uint8_t>& bytes, torch::serialize::InputArchive* archive) {
  std::istringstream in(std::string(bytes.begin(), bytes.end()));
  archive->load_from(in);
}

std::vector<uint8_t> TensorBytes(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  const auto* p = static_cast<const uint8_t*>(c.data_ptr());
  return std::vector<uint8_t>(p, p + c.numel() * c.element_size());
}

// A generator's state (a uint8 tensor) from its bytes.
void SetGeneratorState(torch::Generator generator, const std::vector<uint8_t>& bytes) {
  torch::Tensor state = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
  std::copy(bytes.begin(), bytes.end(), state.data_ptr<uint8_t>());
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(state);
}

std::vector<uint8_t> ProgressBytes(const RunProgress& p) {
  StateWriter w;
  w.U32(static_cast<uint32_t>(p.epoch));
  w.I64(p.step);
  for (double v : {p.elapsed_seconds, p.step_seconds, p.idle_seconds}) w.F64(v);
  w.U64(p.epochs.size());
  for (const EpochStats& e : p.epochs) {
    w.U32(static_cast<uint32_t>(e.epoch));
    for (double v : {e.seconds, e.samples_per_s, e.loss, e.train_accuracy, e.test_accuracy})
      w.F64(v);
  }
  return w.Take();
}

Status ReadProgress(const std::vector<uint8_t>& bytes, RunProgress* p) {
  StateReader r(bytes, "progress");
  uint32_t epoch = 0;
  SPARSELINK_RETURN_IF_ERROR(r.U32("epoch", &epoch));
  p->epoch = static_cast<int>(epoch);
  SPARSELINK_RETURN_IF_ERROR(r.I64("step", &p->step));
  SPARSELINK_RETURN_IF_ERROR(r.F64("elapsed_seconds", &p->elapsed_seconds));
  SPARSELINK_RETURN_IF_ERROR(r.F64("step_seconds", &p->step_seconds));
  SPARSELINK_RETURN_IF_ERROR(r.F64("idle_seconds", &p->idle_seconds));
  uint64_t count = 0;
  SPARSELINK_RETURN_IF_ERROR(r.U64("epochs", &count));
  if (count != epoch) {
    return FieldError(ErrorCode::kCorruptPacket, "progress.epochs", count,
                      "expected one per epoch completed, " + std::to_string(epoch));
  }
  p->epochs.assign(count, EpochStats{});
  for (EpochStats& e : p->epochs) {
    uint32_t number = 0;
    SPARSELINK_RETURN_IF_ERROR(r.U32("epochs.epoch", &number));
    e.epoch = static_cast<int>(number);
    for (double* v : {&e.seconds, &e.samples_per_s, &e.loss, &e.train_accuracy, &e.test_accuracy}) {
      SPARSELINK_RETURN_IF_ERROR(r.F64("epochs.figures", v));
    }
  }
  return r.Done();
}

// LibTorch's exceptions as a Status with its message's first line.
template <typename Fn>
Status Guard(const std::string& what, const Fn& fn) {
  try {
    fn();
    return Status::Ok();
  } catch (const c10::Error& e) {
    const std::string message = e.what_without_backtrace();
    return Status(ErrorCode::kCorruptPacket, what + ": " + message.substr(0, message.find('\n')));
  } catch (const std::exception& e) {
    return Status(ErrorCode::kCorruptPacket, what + ": " + e.what());
  }
}

}  // namespace

std::string RunConfig(const TrainOptions& o, const OwnStages& own, const Dataset& train,
                      const Dataset& test, int world_size, const std::string& boundary_lines) {
  const int64_t n =
      o.max_train_samples > 0 ? std::min(o.max_train_samples, train.size()) : train.size();
  std::string config = Line("world_size", int64_t{world_size});
  config += Line("model.stages", static_cast<int64_t>(own.stages->size()));
  config += Line("model.shapes", Hex(ShapesHash(own)));
  config += Line("data.train",
                 std::to_string(n) + " samples, " +
                     Hex(DataHash({train.images.slice(0, 0, n), train.labels.slice(0, 0, n)})));
  config += Line("data.test", std::to_string(test.size()) + " samples, " +
                                  Hex(DataHash({test.images, test.labels})));
  config += Line("train.batch", o.batch_size);
  config += Line("train.micro_batches", o.micro_batches);
  config += Line("train.optimizer", o.optimizer == OptimizerKind::kAdam ? "adam" : "sgd");
  config += Line("train.learning_rate", o.learning_rate);
  config += Line("train.lr_schedule", o.schedule == LrSchedule::kCosine ? "cosine" : "constant");
  config += Line("train.momentum", o.momentum);
  config += Line("train.weight_decay", o.weight_decay);
  config += Line("train.seed", static_cast<int64_t>(o.seed));
  return config + boundary_lines + o.checkpoint.config;
}

Status SaveRun(const OwnStages& own, const torch::optim::Optimizer& optimizer,
               const torch::Generator& shuffle, const RunProgress& progress,
               Checkpoint* checkpoint) {
  for (size_t s = own.first; s < own.end; ++s) {
    SPARSELINK_RETURN_IF_ERROR(Guard("saving stage " + std::to_string(s), [&] {
      torch::serialize::OutputArchive archive;
      (*own.stages)[s]->save(archive);
      checkpoint->Add("stage-" + std::to_string(s), ArchiveBytes(archive));
    }));
  }
  SPARSELINK_RETURN_IF_ERROR(Guard("saving the optimizer", [&] {
    torch::serialize::OutputArchive archive;
    optimizer.save(archive);
    checkpoint->Add("optimizer", ArchiveBytes(archive));
  }));
  StateWriter rng;
  rng.Bytes(TensorBytes(shuffle.get_state()));
  rng.Bytes(TensorBytes(at::detail::getDefaultCPUGenerator().get_state()));
  checkpoint->Add("rng", rng.Take());
  checkpoint->Add("progress", ProgressBytes(progress));
  return Status::Ok();
}

Result<const std::vector<uint8_t>*> Section(const Checkpoint& checkpoint,
                                            const std::filesystem::path& path,
                                            std::string_view name) {
  const std::vector<uint8_t>* bytes = checkpoint.Find(name);
  if (bytes == nullptr) {
    return FieldError(ErrorCode::kCorruptPacket, "checkpoint", path.string(),
                      "has no section " + std::string(name));
  }
  return bytes;
}

Status CheckCheckpointOptions(const TrainOptions& options) {
  const CheckpointOptions& c = options.checkpoint;
  if (c.stop_after < 0 || c.stop_after > options.epochs) {
    return FieldError(
        ErrorCode::kInvalidArgument, "stop_after", c.stop_after,
        "must be in [1, epochs = " + std::to_string(options.epochs) + "], or 0 for no stop");
  }
  if (c.stop_after > 0 && c.dir.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "stop_after", c.stop_after,
                      "needs a checkpoint directory to resume the stopped run from");
  }
  return Status::Ok();
}

Status LoadRun(const Checkpoint& checkpoint, const std::filesystem::path& path,
               const TrainOptions& options, const OwnStages& own,
               torch::optim::Optimizer& optimizer, torch::Generator& shuffle,
               RunProgress* progress) {
  const auto named = [&](const Status& s) {
    return s.ok() ? s : FieldError(s.code(), "checkpoint", path.string(), s.message());
  };
  if (checkpoint.epoch > static_cast<uint32_t>(options.epochs)) {
    return named(FieldError(ErrorCode::kInvalidArgument, "epoch", checkpoint.epoch,
                            "past the run's epochs = " + std::to_string(options.epochs) +
                                " (a run is extended by raising its epochs)"));
  }
  for (size_t s = own.first; s < own.end; ++s) {
    const std::string name = "stage-" + std::to_string(s);
    SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* bytes, Section(checkpoint, path, name));
    torch::nn::Sequential& stage = (*own.stages)[s];
    std::vector<std::vector<int64_t>> sizes;
    for (const auto& p : stage->parameters()) sizes.push_back(p.sizes().vec());
    SPARSELINK_RETURN_IF_ERROR(named(Guard("section " + name, [&] {
      torch::serialize::InputArchive archive;
      LoadArchive(*bytes, &archive);
      torch::NoGradGuard no_grad;
      stage->load(archive);
    })));
    size_t i = 0;
    for (const auto& p : stage->parameters()) {
      if (p.sizes().vec() != sizes[i++]) {
        return named(Status(ErrorCode::kCorruptPacket,
                            "section " + name + ": a parameter changed its shape"));
      }
    }
  }
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* optimizer_bytes,
                              Section(checkpoint, path, "optimizer"));
  SPARSELINK_RETURN_IF_ERROR(named(Guard("section optimizer", [&] {
    torch::serialize::InputArchive archive;
    LoadArchive(*optimizer_bytes, &archive);
    optimizer.load(archive);
  })));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* rng_bytes,
                              Section(checkpoint, path, "rng"));
  StateReader rng(*rng_bytes, "rng");
  std::vector<uint8_t> shuffle_state, global_state;
  SPARSELINK_RETURN_IF_ERROR(named(rng.Bytes("shuffle", &shuffle_state)));
  SPARSELINK_RETURN_IF_ERROR(named(rng.Bytes("global", &global_state)));
  SPARSELINK_RETURN_IF_ERROR(named(rng.Done()));
  SPARSELINK_RETURN_IF_ERROR(named(Guard("section rng", [&] {
    SetGeneratorState(shuffle, shuffle_state);
    SetGeneratorState(at::detail::getDefaultCPUGenerator(), global_state);
  })));
  SPARSELINK_ASSIGN_OR_RETURN(const std::vector<uint8_t>* progress_bytes,
                              Section(checkpoint, path, "progress"));
  SPARSELINK_RETURN_IF_ERROR(named(ReadProgress(*progress_bytes, progress)));
  if (progress->epoch != static_cast<int>(checkpoint.epoch)) {
    return named(FieldError(ErrorCode::kCorruptPacket, "progress.epoch", progress->epoch,
                            "the header says " + std::to_string(checkpoint.epoch)));
  }
  return Status::Ok();
}

}  // namespace sparselink::torch_adapter::internal
