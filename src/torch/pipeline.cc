// TrainPipelineStage (sparselink/torch/pipeline.hpp): the epochs and batches of Train, run by
// one rank on its stage, with the epoch's figures and the run's reports gathered from every
// rank at the end of each.
#include "sparselink/torch/pipeline.hpp"

#include <sys/resource.h>
#include <time.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "torch/pipeline_rank.hpp"
#include "torch/run_state.hpp"

namespace sparselink::torch_adapter {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

// The last rank's figures of an epoch, for every rank.
struct EpochCounts {
  double loss_sum = 0;
  int64_t train_correct = 0;
  int64_t test_correct = 0;
};

Result<EpochCounts> GatherEpoch(Transport& transport, const EpochCounts& mine,
                                std::chrono::milliseconds timeout) {
  std::vector<uint8_t> bytes(sizeof mine);
  std::memcpy(bytes.data(), &mine, sizeof mine);
  SPARSELINK_ASSIGN_OR_RETURN(auto all, transport.AllGather(bytes, timeout));
  const std::vector<uint8_t>& last = all.back();
  if (last.size() != sizeof(EpochCounts)) {
    return FieldError(ErrorCode::kCorruptPacket, "epoch figures bytes", last.size(),
                      "expected " + std::to_string(sizeof(EpochCounts)));
  }
  EpochCounts counts;
  std::memcpy(&counts, last.data(), sizeof counts);
  return counts;
}

json ReportJson(const BoundaryReport& r) {
  json history = json::array();
  for (const NegotiationRecord& h : r.history) {
    json stages = json::array();
    for (const auto& s : h.stages) stages.push_back({int(s.state), s.keep, int(s.reason)});
    history.push_back({{"step", h.step},
                       {"changed", h.changed},
                       {"stages", stages},
                       {"version", h.contract.version},
                       {"keep", h.contract.keep},
                       {"bound_by", int(h.contract.bound_by)}});
  }
  json time = json::array();
  for (const auto& p : BoundaryTime::kPhases) time.push_back(r.time.*p.seconds);
  return {{"boundary", r.boundary},
          {"cols", r.cols},
          {"block", r.block},
          {"forward", r.forward_wire_bytes},
          {"backward", r.backward_wire_bytes},
          {"dense", r.dense_fp32_bytes},
          {"packets", r.packets},
          {"modelled", r.modelled_link_seconds},
          {"route", r.route_seconds},
          {"time", time},
          {"history", history},
          {"contract", {r.contract.version, r.contract.keep, int(r.contract.bound_by)}},
          {"sensitivity", r.sensitivity},
          {"receiver_sensitivity", r.receiver_sensitivity}};
}

// Adds one rank's half of a boundary's report (its sender's or its receiver's) into `into`.
void MergeReport(const json& j, const BoundaryReport& initial, BoundaryReport* into) {
  into->boundary = j.at("boundary").get<size_t>();
  into->cols = j.at("cols").get<size_t>();
  into->block = j.at("block").get<size_t>();
  into->forward_wire_bytes += j.at("forward").get<uint64_t>();
  into->backward_wire_bytes += j.at("backward").get<uint64_t>();
  into->dense_fp32_bytes += j.at("dense").get<uint64_t>();
  into->packets += j.at("packets").get<uint64_t>();
  into->modelled_link_seconds += j.at("modelled").get<double>();
  into->route_seconds += j.at("route").get<double>();
  size_t i = 0;
  for (const auto& p : BoundaryTime::kPhases)
    into->time.*p.seconds += j.at("time")[i++].get<double>();
  const auto sensitivity = j.at("sensitivity").get<std::vector<float>>();
  if (!sensitivity.empty()) {  // the sender's half: its history, contract and map
    into->sensitivity = sensitivity;
    into->contract = initial.contract;
    const json& c = j.at("contract");
    into->contract.version = c[0].get<uint32_t>();
    into->contract.keep = c[1].get<double>();
    into->contract.bound_by = static_cast<BoundBy>(c[2].get<int>());
    for (const json& h : j.at("history")) {
      NegotiationRecord record{.step = h.at("step").get<uint64_t>(),
                               .contract = into->contract,
                               .changed = h.at("changed").get<bool>()};
      record.contract.version = h.at("version").get<uint32_t>();
      record.contract.keep = h.at("keep").get<double>();
      record.contract.bound_by = static_cast<BoundBy>(h.at("bound_by").get<int>());
      for (const json& s : h.at("stages")) {
        record.stages.push_back({static_cast<NegotiationState>(s[0].get<int>()), s[1].get<double>(),
                                 static_cast<BoundBy>(s[2].get<int>())});
      }
      into->history.push_back(std::move(record));
    }
  }
  const auto receiver = j.at("receiver_sensitivity").get<std::vector<float>>();
  if (!receiver.empty()) into->receiver_sensitivity = receiver;
}

// Every rank's boundary halves and times, merged into `report` on every rank.
Status GatherReports(Transport& transport, const internal::PipelineRank& rank,
                     const internal::RunProgress& run, const PipelineOptions& options,
                     PipelineReport* report) {
  json mine = {{"step_seconds", run.step_seconds},
               {"idle_seconds", run.idle_seconds},
               {"cpu_seconds", run.cpu_seconds},
               {"sent_bytes", rank.SentBytes()}};
  mine["boundaries"] = json::array();
  for (const BoundaryReport& r : rank.LocalReports()) mine["boundaries"].push_back(ReportJson(r));
  const std::string text = mine.dump();
  SPARSELINK_ASSIGN_OR_RETURN(
      auto all, transport.AllGather({reinterpret_cast<const uint8_t*>(text.data()), text.size()},
                                    options.timeout));
  report->boundaries.assign(all.size() > 0 ? all.size() - 1 : 0, BoundaryReport{});
  try {
    for (const auto& bytes : all) {
      const json j = json::parse(bytes.begin(), bytes.end());
      report->step_seconds.push_back(j.at("step_seconds").get<double>());
      report->idle_seconds.push_back(j.at("idle_seconds").get<double>());
      report->cpu_seconds.push_back(j.at("cpu_seconds").get<double>());
      report->sent_bytes.push_back(j.at("sent_bytes").get<uint64_t>());
      for (const json& b : j.at("boundaries")) {
        const size_t boundary = b.at("boundary").get<size_t>();
        if (boundary >= report->boundaries.size()) {
          return FieldError(ErrorCode::kCorruptPacket, "report boundary", boundary, "out of range");
        }
        BoundaryReport initial;
        initial.contract = {.boundary = static_cast<uint32_t>(boundary),
                            .keep_full = options.boundary.keep_full,
                            .full_codec = options.boundary.full_codec,
                            .lossy_codec = options.boundary.lossy_codec,
                            .granularity = options.boundary.policy == RoutingPolicy::kStructured
                                               ? Granularity::kUnit
                                               : Granularity::kElement};
        MergeReport(b, initial, &report->boundaries[boundary]);
      }
    }
  } catch (const json::exception& e) {
    return Status(ErrorCode::kCorruptPacket, std::string("a rank's report: ") + e.what());
  }
  return Status::Ok();
}

// CPU seconds so far: of the whole process where it holds one rank (its worker threads, the
// transport's threads), of the calling thread where ranks share the process.
double CpuSeconds(bool whole_process) {
  if (whole_process) {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
  }
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// One epoch's training steps on this rank: the shuffled batches (the same order on every
// rank), each through the schedule's forwards and backwards, one optimizer step and the
// step's end. Adds the time in steps, and of it the time waiting, to *run.
Status TrainStageEpoch(internal::PipelineRank& rank, const Dataset& train, const TrainOptions& t,
                       torch::optim::Optimizer& optimizer, torch::Generator& shuffle,
                       bool whole_process, internal::RunProgress* run, EpochCounts* counts) {
  const int64_t n =
      t.max_train_samples > 0 ? std::min(t.max_train_samples, train.size()) : train.size();
  const int64_t batches = (n + t.batch_size - 1) / t.batch_size;
  const int64_t total_steps = batches * t.epochs;
  rank.SetTraining(true);
  const torch::Tensor order = torch::randperm(n, shuffle, torch::kInt64);
  for (int64_t b = 0; b < batches; ++b) {
    const torch::Tensor index =
        order.slice(0, b * t.batch_size, std::min(n, (b + 1) * t.batch_size));
    const torch::Tensor images =
        rank.first() ? train.images.index_select(0, index) : torch::Tensor();
    const torch::Tensor labels =
        rank.last() ? train.labels.index_select(0, index) : torch::Tensor();
    if (t.schedule == LrSchedule::kCosine) {
      const double lr = LearningRate(t, run->step, total_steps);
      for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
    }
    const auto step_start = Clock::now();
    const double idle_before = rank.idle_seconds();
    const double cpu_before = CpuSeconds(whole_process);
    optimizer.zero_grad();
    double batch_loss = 0;
    SPARSELINK_RETURN_IF_ERROR(
        rank.Step(images, labels, index.size(0), &batch_loss, &counts->train_correct));
    optimizer.step();
    SPARSELINK_RETURN_IF_ERROR(rank.EndStep(run->step));
    const double step_seconds = std::chrono::duration<double>(Clock::now() - step_start).count();
    run->step_seconds += step_seconds;
    run->idle_seconds += rank.idle_seconds() - idle_before;
    rank.CountStepTime(step_seconds, rank.idle_seconds() - idle_before);
    run->cpu_seconds += CpuSeconds(whole_process) - cpu_before;
    ++run->step;
    counts->loss_sum += batch_loss;
  }
  return Status::Ok();
}

// The test set through every stage, forward only; the last rank counts the right answers.
Status EvaluateStage(internal::PipelineRank& rank, const Dataset& test, const TrainOptions& t,
                     EpochCounts* counts) {
  rank.SetTraining(false);
  for (int64_t begin = 0; begin < test.size(); begin += t.eval_batch_size) {
    const int64_t end = std::min(test.size(), begin + t.eval_batch_size);
    SPARSELINK_ASSIGN_OR_RETURN(
        const int64_t correct,
        rank.EvaluateBatch(rank.first() ? test.images.slice(0, begin, end) : torch::Tensor(),
                           rank.last() ? test.labels.slice(0, begin, end) : torch::Tensor(),
                           end - begin));
    counts->test_correct += correct;
  }
  return Status::Ok();
}

}  // namespace

Result<PipelineReport> TrainPipelineStage(Transport& transport, Stages& stages,
                                          const Dataset& train, const Dataset& test,
                                          const PipelineOptions& options, std::ostream* progress) {
  const TrainOptions& t = options.train;
  if (t.epochs < 1 || t.batch_size < 1 || t.micro_batches < 1 || t.micro_batches > t.batch_size ||
      t.eval_batch_size < 1 || train.size() == 0 || test.size() == 0) {
    return Status(ErrorCode::kInvalidArgument,
                  "pipeline: epochs, batch, micro-batches (<= batch), evaluation batch and both "
                  "datasets must be positive");
  }
  SPARSELINK_RETURN_IF_ERROR(internal::CheckCheckpointOptions(t));
  internal::PipelineRank rank(transport, stages, options);
  SPARSELINK_RETURN_IF_ERROR(rank.Setup(train.images.slice(0, 0, 1)));
  std::unique_ptr<torch::optim::Optimizer> optimizer = MakeOptimizer(rank.Parameters(), t);
  const int64_t n =
      t.max_train_samples > 0 ? std::min(t.max_train_samples, train.size()) : train.size();
  const int64_t batches = (n + t.batch_size - 1) / t.batch_size;
  torch::Generator shuffle = at::detail::createCPUGenerator(t.seed);
  const CheckpointOptions& checkpoints = t.checkpoint;
  const auto own_stage = static_cast<size_t>(transport.rank());
  const internal::OwnStages own{&stages, own_stage, own_stage + 1};
  std::string config;
  if (!checkpoints.dir.empty() || !checkpoints.resume.empty()) {
    config = internal::RunConfig(t, own, train, test, transport.world_size(),
                                 internal::BoundaryConfig(options.boundary));
  }
  // Idle counts inside training steps only, where the bubble formula applies (evaluation
  // waits too, outside the steps).
  internal::RunProgress run;
  if (!checkpoints.resume.empty()) {
    SPARSELINK_RETURN_IF_ERROR(
        internal::ResumeStage(transport, rank, options, config, own, *optimizer, shuffle, &run));
  }
  PipelineReport report;
  report.train.epochs = run.epochs;
  report.predicted_bubble =
      BubbleFraction(static_cast<int>(stages.size()), static_cast<int>(t.micro_batches));
  const double elapsed_before = run.elapsed_seconds;
  const auto run_start = Clock::now();
  const int last_epoch = checkpoints.stop_after > 0 ? checkpoints.stop_after : t.epochs;
  for (int epoch = run.epoch + 1; epoch <= last_epoch; ++epoch) {
    const auto start = Clock::now();
    EpochCounts counts;
    SPARSELINK_RETURN_IF_ERROR(TrainStageEpoch(rank, train, t, *optimizer, shuffle,
                                               transport.backend() != "inprocess", &run, &counts));
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    SPARSELINK_RETURN_IF_ERROR(EvaluateStage(rank, test, t, &counts));
    SPARSELINK_ASSIGN_OR_RETURN(const EpochCounts all,
                                GatherEpoch(transport, counts, options.timeout));
    EpochStats stats{.epoch = epoch,
                     .seconds = seconds,
                     .samples_per_s = seconds > 0 ? static_cast<double>(n) / seconds : 0.0,
                     .loss = all.loss_sum / static_cast<double>(batches),
                     .train_accuracy = static_cast<double>(all.train_correct) / double(n),
                     .test_accuracy = static_cast<double>(all.test_correct) / double(test.size())};
    report.train.epochs.push_back(stats);
    const double elapsed =
        elapsed_before + std::chrono::duration<double>(Clock::now() - run_start).count();
    if (progress != nullptr && rank.first()) {
      *progress << EpochLine(stats, t, elapsed) << std::flush;
    }
    if (!checkpoints.dir.empty()) {
      run.epoch = epoch;
      run.elapsed_seconds = elapsed;
      run.epochs = report.train.epochs;
      SPARSELINK_RETURN_IF_ERROR(internal::SaveStage(rank, options, config, own, *optimizer,
                                                     shuffle, run, transport.rank(),
                                                     transport.world_size()));
    }
  }
  rank.SetTraining(true);
  SPARSELINK_RETURN_IF_ERROR(GatherReports(transport, rank, run, options, &report));
  report.link_rate_history = rank.link_rate_history();
  return report;
}

}  // namespace sparselink::torch_adapter
