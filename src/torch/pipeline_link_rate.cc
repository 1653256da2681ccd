// --link-budget auto across ranks: at each negotiation, every rank tells the others how fast
// the packets it received in the last period crossed (its links time each packet's rest, after
// its first message arrived) and how long its own compute per step took; every rank then
// computes the same budgets: each boundary's rate times a share (fill) of its part of the
// compute-bound step, unless the user set the target, so the links add at most that share.
#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "torch/pipeline_rank.hpp"

namespace sparselink::torch_adapter::internal {

namespace {

// A period with nothing timed raises the rate in use by this factor: a budget bound low makes
// packets too small to time, and without probing the rate could never be seen to recover.
constexpr double kProbeGrowth = 1.5;

// Timed bytes and seconds of `link` since `*since`, which moves to now.
std::pair<double, double> TimedSince(const Link* link, LinkStats* since) {
  if (link == nullptr) return {0.0, 0.0};
  const LinkStats now = link->stats();
  const double bytes = static_cast<double>(now.timed_bytes - since->timed_bytes);
  const double seconds = now.timed_seconds - since->timed_seconds;
  *since = now;
  return {bytes, seconds};
}

}  // namespace

void PipelineRank::CountStepTime(double seconds, double idle) {
  window_.step_seconds += seconds;
  window_.idle_seconds += idle;
  window_.steps += 1;
}

Status PipelineRank::FollowLinkRate(double* link_cap) {
  const RoutedBoundaryOptions& o = options_.boundary;
  if (rate_budgets_.empty()) {
    for (int b = 0; b + 1 < world_; ++b) {
      SPARSELINK_ASSIGN_OR_RETURN(LinkRateBudget budget, LinkRateBudget::Create(o.link_rate));
      rate_budgets_.push_back(budget);
    }
  }
  const double steps = std::max<int64_t>(window_.steps, 1);
  const auto [act_bytes, act_seconds] = TimedSince(in_.activation.get(), &timed_in_);
  const auto [grad_bytes, grad_seconds] = TimedSince(out_.gradient.get(), &timed_out_);
  const nlohmann::json mine = {
      {"step", window_.step_seconds / steps},
      {"compute", std::max(0.0, window_.step_seconds - window_.idle_seconds) / steps},
      {"act", {act_bytes, act_seconds}},
      {"grad", {grad_bytes, grad_seconds}}};
  window_ = {};
  const std::string text = mine.dump();
  SPARSELINK_ASSIGN_OR_RETURN(
      auto all, transport_.AllGather({reinterpret_cast<const uint8_t*>(text.data()), text.size()},
                                     options_.timeout));
  LinkRateRecord record{.step = step_,
                        .unix_seconds = std::chrono::duration<double>(
                                            std::chrono::system_clock::now().time_since_epoch())
                                            .count()};
  try {
    std::vector<nlohmann::json> ranks;
    for (const auto& bytes : all)
      ranks.push_back(nlohmann::json::parse(bytes.begin(), bytes.end()));
    double compute = 0;
    for (const nlohmann::json& r : ranks) {
      compute += r.at("compute").get<double>();
      record.step_seconds = std::max(record.step_seconds, r.at("step").get<double>());
    }
    // Each boundary's share of the compute-bound step: with few micro-batches the stages and
    // the crossings run one after another, so every boundary's bytes add to the step.
    const auto boundaries = static_cast<double>(std::max<size_t>(ranks.size() - 1, 1));
    record.target_seconds =
        o.target_step_seconds > 0 ? o.target_step_seconds : compute / boundaries;
    // Boundary b: its activations were timed by rank b + 1, its gradients by rank b.
    for (size_t b = 0; b + 1 < ranks.size(); ++b) {
      const auto act = ranks[b + 1].at("act").get<std::vector<double>>();
      const auto grad = ranks[b].at("grad").get<std::vector<double>>();
      const double seconds = act.at(1) + grad.at(1);
      const double measured = seconds > 0 ? (act.at(0) + grad.at(0)) / seconds : 0.0;
      const double in_use = rate_budgets_[b].rate();
      rate_budgets_[b].Observe(measured > 0 || !std::isfinite(in_use) ? measured
                                                                      : in_use * kProbeGrowth);
      record.measured_bytes_per_s.push_back(measured);
      record.rate_bytes_per_s.push_back(rate_budgets_[b].rate());
      record.budget_bytes.push_back(rate_budgets_[b].BytesPerStep(record.target_seconds));
    }
  } catch (const nlohmann::json::exception& e) {
    return Status(ErrorCode::kCorruptPacket, std::string("link rate report: ") + e.what());
  }
  if (sender_) *link_cap = record.budget_bytes[static_cast<size_t>(rank_)];
  link_rate_history_.push_back(std::move(record));
  return Status::Ok();
}

}  // namespace sparselink::torch_adapter::internal
