// What the ranks of a pipeline exchange besides a step's tensors: at a step's end the shared
// budget's split (an all-gather of every sender end's demand, then the same AllocateBudget on
// every rank) and the negotiation of each boundary in packets between its two ranks.
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "torch/pipeline_rank.hpp"

namespace sparselink::torch_adapter::internal {

Status PipelineRank::EndStep(int64_t step) {
  if (sender_ && options_.boundary.policy != RoutingPolicy::kDense) {
    const Status finished = sender_->FinishStep();
    if (!finished.ok()) {
      return Status(finished.code(), "rank " + std::to_string(rank_) + ", boundary " +
                                         std::to_string(rank_) + ": " + finished.message());
    }
  }
  step_ = step + 1;
  if (sender_) sender_->step = step_;
  if (receiver_) receiver_->step = step_;
  const RoutedBoundaryOptions& o = options_.boundary;
  if (o.keep || o.policy == RoutingPolicy::kDense) return Status::Ok();
  if (step_ % o.negotiate_every != 0) return Status::Ok();
  double link_cap = std::numeric_limits<double>::infinity();
  if (o.link_budget_auto) {
    SPARSELINK_RETURN_IF_ERROR(FollowLinkRate(&link_cap));
  } else if (o.link_budget_bytes_per_step > 0) {
    SPARSELINK_RETURN_IF_ERROR(ShareBudget(&link_cap));
  }
  return Negotiate(link_cap);
}

// The budget is split as in one process (RoutedBoundaries::ShareBudget): every sender end
// prices its boundary as a line (FitStepCost) and brings its map; the demands are gathered in
// boundary order, so every rank computes the same allocation, and each sender takes its share
// plus its fixed part as its link cap.
Status PipelineRank::ShareBudget(double* link_cap) {
  const RoutedBoundaryOptions& o = options_.boundary;
  nlohmann::json mine = nlohmann::json::object();
  if (sender_) {
    const size_t packets = static_cast<size_t>(packets_per_step_);
    const size_t packet_rows =
        static_cast<size_t>((max_rows_ + packets_per_step_ - 1) / packets_per_step_);
    const StepCostLine line =
        FitStepCost(sender_->contract(), packets, packet_rows, sender_->cols(),
                    o.negotiator.keep_min, o.gradient_codec, sender_->map().block());
    const auto values = sender_->map().values();
    mine = {{"fixed", line.fixed + control_packet_bytes_},
            {"per_entry", line.per_entry},
            {"rows", packets * packet_rows},
            {"cols", sender_->cols()},
            {"map", std::vector<float>(values.begin(), values.end())}};
  }
  const std::string text = mine.dump();
  SPARSELINK_ASSIGN_OR_RETURN(
      auto all, transport_.AllGather({reinterpret_cast<const uint8_t*>(text.data()), text.size()},
                                     options_.timeout));
  std::vector<nlohmann::json> parsed;
  std::vector<BoundaryDemand> demands;
  double fixed_total = 0;
  int my_index = -1;
  for (size_t r = 0; r < all.size(); ++r) {
    nlohmann::json demand =
        nlohmann::json::parse(all[r].begin(), all[r].end(), nullptr, /*allow_exceptions=*/false);
    if (demand.is_discarded()) {
      return FieldError(ErrorCode::kCorruptPacket, "budget demand of rank", r, "is not JSON");
    }
    if (demand.empty()) continue;
    if (static_cast<int>(r) == rank_) my_index = static_cast<int>(parsed.size());
    parsed.push_back(std::move(demand));
  }
  std::vector<std::vector<float>> maps(parsed.size());
  try {
    for (size_t i = 0; i < parsed.size(); ++i) {
      maps[i] = parsed[i].at("map").get<std::vector<float>>();
      fixed_total += parsed[i].at("fixed").get<double>();
      demands.push_back({.sensitivity = maps[i],
                         .rows = parsed[i].at("rows").get<size_t>(),
                         .cols = parsed[i].at("cols").get<size_t>(),
                         .bytes_per_entry = parsed[i].at("per_entry").get<double>(),
                         .keep_min = o.negotiator.keep_min});
    }
  } catch (const nlohmann::json::exception& e) {
    return Status(ErrorCode::kCorruptPacket, std::string("budget demand: ") + e.what());
  }
  if (demands.empty() || my_index < 0) return Status::Ok();
  SPARSELINK_ASSIGN_OR_RETURN(
      const Allocation allocation,
      AllocateBudget(demands, std::max(0.0, o.link_budget_bytes_per_step - fixed_total)));
  *link_cap = allocation.bytes[static_cast<size_t>(my_index)] +
              parsed[static_cast<size_t>(my_index)].at("fixed").get<double>();
  return Status::Ok();
}

// The negotiation in packets, each end doing its moves in order: the sender's proposal, the
// receiver's counter, the agreed contract, its acknowledgement. Sends do not wait for the
// peer, so a rank that is both the receiver of one boundary and the sender of the next does
// its two parts in turn without deadlock.
Status PipelineRank::Negotiate(double link_cap) {
  const RoutedBoundaryOptions& o = options_.boundary;
  const auto with_where = [&](Status s, size_t b, const std::string& what, int peer) {
    return s.ok() ? s : Status(s.code(), Where(b, what, peer) + ": " + s.message());
  };
  if (sender_) {
    const double link_bytes =
        std::max(0.0, link_cap - control_packet_bytes_) / static_cast<double>(packets_per_step_);
    const auto rows = static_cast<size_t>((max_rows_ + packets_per_step_ - 1) / packets_per_step_);
    SPARSELINK_RETURN_IF_ERROR(sender_->EncodeProposal(
        link_bytes,
        o.link_budget_bytes_per_step > 0 ? BoundBy::kSharedBudget : BoundBy::kSenderLinkBudget,
        rows));
    SPARSELINK_RETURN_IF_ERROR(Send(*out_.negotiation_out, sender_->packet(), 0, true, true));
  }
  const size_t in_b = static_cast<size_t>(rank_ - 1);
  const size_t out_b = static_cast<size_t>(rank_);
  if (receiver_) {
    SPARSELINK_ASSIGN_OR_RETURN(auto proposal,
                                Receive(*in_.negotiation_out, in_b, in_.peer, "proposal"));
    SPARSELINK_RETURN_IF_ERROR(
        with_where(receiver_->Counter(proposal), in_b, "proposal", in_.peer));
    SPARSELINK_RETURN_IF_ERROR(Send(*in_.negotiation_back, receiver_->packet(), 0, true, false));
  }
  if (sender_) {
    SPARSELINK_ASSIGN_OR_RETURN(auto counter,
                                Receive(*out_.negotiation_back, out_b, out_.peer, "counter"));
    SPARSELINK_RETURN_IF_ERROR(with_where(sender_->Settle(counter), out_b, "counter", out_.peer));
    SPARSELINK_RETURN_IF_ERROR(Send(*out_.negotiation_out, sender_->packet(), 0, true, true));
  }
  if (receiver_) {
    SPARSELINK_ASSIGN_OR_RETURN(auto contract,
                                Receive(*in_.negotiation_out, in_b, in_.peer, "contract"));
    SPARSELINK_RETURN_IF_ERROR(
        with_where(receiver_->Acknowledge(contract), in_b, "contract", in_.peer));
    SPARSELINK_RETURN_IF_ERROR(Send(*in_.negotiation_back, receiver_->packet(), 0, true, false));
  }
  if (sender_) {
    SPARSELINK_ASSIGN_OR_RETURN(
        auto ack, Receive(*out_.negotiation_back, out_b, out_.peer, "acknowledgement"));
    SPARSELINK_RETURN_IF_ERROR(
        with_where(sender_->CheckAcknowledgement(ack), out_b, "acknowledgement", out_.peer));
  }
  return Status::Ok();
}

}  // namespace sparselink::torch_adapter::internal
