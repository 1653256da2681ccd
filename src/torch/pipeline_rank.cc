// One rank of a pipeline (pipeline_rank.hpp): setup, a step's forwards and backwards under the
// schedule, evaluation, and the moving and counting of packets between the ranks.
#include "torch/pipeline_rank.hpp"

#include <chrono>
#include <cstring>
#include <string>

namespace sparselink::torch_adapter::internal {

using Clock = std::chrono::steady_clock;

BoundarySpec PipelineRank::SpecOf(size_t boundary) const {
  const std::vector<int64_t>& shape = shapes_[boundary];
  int64_t cols = 1;
  for (int64_t d : shape) cols *= d;
  // Conv feature maps [C, H, W] get one unit per channel unless per_channel_maps is off, as in
  // one process (RoutedBoundaries).
  const size_t block = shape.size() == 3 && options_.boundary.per_channel_maps
                           ? static_cast<size_t>(shape[1] * shape[2])
                           : 1;
  return {.boundary = boundary,
          .cols = static_cast<size_t>(cols),
          .block = block,
          .options = &options_.boundary};
}

Status PipelineRank::OpenChannels(size_t boundary, int peer, bool sender, EndChannels* c) {
  (void)sender;
  const auto b = static_cast<uint32_t>(boundary);
  c->peer = peer;
  const auto open = [&](Direction d, ChannelKind kind, std::unique_ptr<Link>* link) -> Status {
    SPARSELINK_ASSIGN_OR_RETURN(*link,
                                transport_.OpenLink(peer, ChannelId(b, d, kind), options_.link));
    return Status::Ok();
  };
  SPARSELINK_RETURN_IF_ERROR(open(Direction::kForward, ChannelKind::kActivation, &c->activation));
  SPARSELINK_RETURN_IF_ERROR(open(Direction::kBackward, ChannelKind::kGradient, &c->gradient));
  SPARSELINK_RETURN_IF_ERROR(open(Direction::kBackward, ChannelKind::kSummary, &c->summary));
  SPARSELINK_RETURN_IF_ERROR(
      open(Direction::kForward, ChannelKind::kNegotiation, &c->negotiation_out));
  return open(Direction::kBackward, ChannelKind::kNegotiation, &c->negotiation_back);
}

Status PipelineRank::Setup(const torch::Tensor& sample) {
  rank_ = transport_.rank();
  world_ = transport_.world_size();
  if (static_cast<size_t>(world_) != stages_.size()) {
    return FieldError(ErrorCode::kInvalidArgument, "world size", world_,
                      "must equal the number of stages, " + std::to_string(stages_.size()) +
                          " (one stage per rank)");
  }
  {  // The activation of every boundary, per sample: one row through the whole model.
    torch::NoGradGuard no_grad;
    torch::Tensor x = sample;
    for (size_t s = 0; s + 1 < stages_.size(); ++s) {
      x = stages_[s]->forward(x);
      shapes_.emplace_back(x.sizes().begin() + 1, x.sizes().end());
    }
  }
  if (!last()) {
    const BoundarySpec spec = SpecOf(static_cast<size_t>(rank_));
    SPARSELINK_ASSIGN_OR_RETURN(sender_, BoundarySender::Create(spec));
    SPARSELINK_RETURN_IF_ERROR(OpenChannels(spec.boundary, rank_ + 1, true, &out_));
    sender_report_ = {.boundary = spec.boundary, .cols = spec.cols, .block = spec.block};
    // The room every step keeps for a summary and a negotiation, as in one process.
    std::vector<uint8_t> probe;
    SPARSELINK_RETURN_IF_ERROR(
        EncodeSummary(std::vector<float>(spec.cols, 0.0f), {}, &probe, kSummaryCodec));
    control_packet_bytes_ = static_cast<double>(probe.size());
    SPARSELINK_RETURN_IF_ERROR(EncodeProposal({.rows = 1, .cols = 1}, {}, &probe));
    control_packet_bytes_ += 2 * static_cast<double>(probe.size());
    SPARSELINK_RETURN_IF_ERROR(EncodeContract(InitialContract(spec), {}, &probe));
    control_packet_bytes_ += 2 * static_cast<double>(probe.size());
  }
  if (!first()) {
    const BoundarySpec spec = SpecOf(static_cast<size_t>(rank_ - 1));
    SPARSELINK_ASSIGN_OR_RETURN(receiver_, BoundaryReceiver::Create(spec));
    SPARSELINK_RETURN_IF_ERROR(OpenChannels(spec.boundary, rank_ - 1, false, &in_));
    receiver_report_ = {.boundary = spec.boundary, .cols = spec.cols, .block = spec.block};
  }
  return Status::Ok();
}

std::string PipelineRank::Where(size_t boundary, const std::string& what, int peer) const {
  return "rank " + std::to_string(rank_) + ", boundary " + std::to_string(boundary) + ", " + what +
         " of step " + std::to_string(step_) + " from rank " + std::to_string(peer);
}

Status PipelineRank::Send(Link& link, const std::vector<uint8_t>& packet, uint64_t dense_bytes,
                          bool count, bool forward) {
  SPARSELINK_RETURN_IF_ERROR(link.Send(packet, dense_bytes, options_.timeout));
  if (!count) return Status::Ok();
  BoundaryReport& r = forward ? sender_report_ : receiver_report_;
  (forward ? r.forward_wire_bytes : r.backward_wire_bytes) += packet.size();
  r.dense_fp32_bytes += dense_bytes;
  r.modelled_link_seconds += ModelledTransferSeconds(options_.boundary.link, packet.size());
  if (options_.boundary.policy != RoutingPolicy::kDense) r.packets += 1;
  return Status::Ok();
}

Result<std::vector<uint8_t>> PipelineRank::Receive(Link& link, size_t boundary, int peer,
                                                   const std::string& what) {
  const auto start = Clock::now();
  auto packet = link.Recv(options_.timeout);
  idle_seconds_ += std::chrono::duration<double>(Clock::now() - start).count();
  if (!packet.ok()) {
    return Status(packet.status().code(), Where(boundary, "waiting for the " + what, peer) + ": " +
                                              packet.status().message());
  }
  return packet;
}

// Dense (the baseline): the tensor's fp32 bytes cross as they are.
static std::vector<uint8_t> RawBytes(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  const auto* p = reinterpret_cast<const uint8_t*>(c.data_ptr<float>());
  return std::vector<uint8_t>(p, p + c.numel() * sizeof(float));
}
static Result<torch::Tensor> FromRawBytes(const std::vector<uint8_t>& bytes,
                                          std::vector<int64_t> sizes) {
  const torch::Tensor t = torch::empty(sizes, torch::kFloat32);
  if (bytes.size() != static_cast<size_t>(t.numel()) * sizeof(float)) {
    return FieldError(ErrorCode::kCorruptPacket, "dense tensor bytes", bytes.size(),
                      "expected " + std::to_string(t.numel() * 4));
  }
  std::memcpy(t.data_ptr<float>(), bytes.data(), bytes.size());
  return t;
}

Status PipelineRank::Forward(int micro, const torch::Tensor& input, int64_t rows, double loss_share,
                             const torch::Tensor& labels, double* loss, int64_t* correct) {
  const bool dense = options_.boundary.policy == RoutingPolicy::kDense;
  const auto m = static_cast<uint32_t>(micro);
  InFlight& f = in_flight_[micro];
  if (first()) {
    f.input = input;
  } else {
    const size_t b = static_cast<size_t>(rank_ - 1);
    SPARSELINK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                                Receive(*in_.activation, b, in_.peer, "activation"));
    std::vector<int64_t> sizes{rows};
    sizes.insert(sizes.end(), shapes_[b].begin(), shapes_[b].end());
    torch::Tensor x;
    if (dense) {
      SPARSELINK_ASSIGN_OR_RETURN(x, FromRawBytes(bytes, sizes));
    } else {
      auto decoded = receiver_->DecodeActivation(bytes, rows, m, /*count=*/true);
      if (!decoded.ok())
        return Status(decoded.status().code(),
                      Where(b, "activation", in_.peer) + ": " + decoded.status().message());
      x = decoded->reshape(sizes);
    }
    f.input = x.requires_grad_(true);
  }
  f.output = stage()->forward(f.input);
  if (last()) {
    f.loss = torch::nn::functional::cross_entropy(f.output, labels);
    if (loss_share != 1.0) f.loss = f.loss * loss_share;
    const double value = f.loss.item<double>();
    if (!std::isfinite(value)) {
      return FieldError(ErrorCode::kNonFinite, "loss", value, "at step " + std::to_string(step_));
    }
    *loss += value;
    *correct += f.output.detach().argmax(1).eq(labels).sum().item<int64_t>();
    return Status::Ok();
  }
  const uint64_t dense_bytes = static_cast<uint64_t>(f.output.numel()) * sizeof(float);
  if (dense) return Send(*out_.activation, RawBytes(f.output), dense_bytes, true, true);
  Status routed = sender_->EncodeActivation(f.output, m, /*count=*/true);
  if (!routed.ok())
    return Status(routed.code(), "rank " + std::to_string(rank_) + ", boundary " +
                                     std::to_string(rank_) + ": " + routed.message());
  return Send(*out_.activation, sender_->packet(), dense_bytes, true, true);
}

Status PipelineRank::Backward(int micro) {
  const bool dense = options_.boundary.policy == RoutingPolicy::kDense;
  const auto m = static_cast<uint32_t>(micro);
  auto it = in_flight_.find(micro);
  if (it == in_flight_.end()) {
    return FieldError(ErrorCode::kInvalidArgument, "micro_batch", micro, "has no forward");
  }
  InFlight& f = it->second;
  if (last()) {
    f.loss.backward();
  } else {
    const size_t b = static_cast<size_t>(rank_);
    // A summary step's first backward brings the receiver's summary before the gradient.
    if (!dense && step_ % options_.boundary.summary_every == 0 && micro == 0) {
      SPARSELINK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                                  Receive(*out_.summary, b, out_.peer, "summary"));
      Status taken = sender_->TakeSummary(bytes);
      if (!taken.ok())
        return Status(taken.code(), Where(b, "summary", out_.peer) + ": " + taken.message());
    }
    SPARSELINK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                                Receive(*out_.gradient, b, out_.peer, "gradient"));
    torch::Tensor grad;
    if (dense) {
      SPARSELINK_ASSIGN_OR_RETURN(grad, FromRawBytes(bytes, f.output.sizes().vec()));
    } else {
      Status taken = sender_->TakeGradient(bytes, m, &grad);
      if (!taken.ok())
        return Status(taken.code(), Where(b, "gradient", out_.peer) + ": " + taken.message());
    }
    f.output.backward(grad.reshape(f.output.sizes()).to(f.output.dtype()));
  }
  if (!first()) {
    const int64_t rows = f.input.size(0);
    const torch::Tensor g = f.input.grad()
                                .to(torch::kFloat32)
                                .contiguous()
                                .reshape({rows, static_cast<int64_t>(f.input.numel() / rows)});
    const uint64_t dense_bytes = static_cast<uint64_t>(g.numel()) * sizeof(float);
    if (dense) {
      SPARSELINK_RETURN_IF_ERROR(Send(*in_.gradient, RawBytes(g), dense_bytes, true, false));
    } else {
      const std::string where =
          "rank " + std::to_string(rank_) + ", boundary " + std::to_string(rank_ - 1) + ": ";
      if (receiver_->SummaryDue(m)) {
        Status s = receiver_->EncodeSummary(g, m);
        if (!s.ok()) return Status(s.code(), where + s.message());
        // A summary has no dense counterpart: it adds wire bytes and no dense bytes.
        SPARSELINK_RETURN_IF_ERROR(Send(*in_.summary, receiver_->packet(), 0, true, false));
      }
      Status s = receiver_->EncodeGradient(g, m);
      if (!s.ok()) return Status(s.code(), where + s.message());
      SPARSELINK_RETURN_IF_ERROR(
          Send(*in_.gradient, receiver_->packet(), dense_bytes, true, false));
    }
  }
  in_flight_.erase(it);
  return Status::Ok();
}

Status PipelineRank::Step(const torch::Tensor& images, const torch::Tensor& labels,
                          int64_t batch_rows, double* loss, int64_t* correct) {
  // Micro-batches: rows [m * size / M, (m + 1) * size / M) of the batch, as in one process.
  const int64_t parts = std::min<int64_t>(options_.train.micro_batches, batch_rows);
  max_rows_ = std::max(max_rows_, batch_rows);
  packets_per_step_ = std::max(packets_per_step_, parts);
  const std::vector<PipelineOp> ops =
      ScheduleOps(options_.schedule, world_, rank_, static_cast<int>(parts));
  for (const PipelineOp& op : ops) {
    if (!op.forward) {
      SPARSELINK_RETURN_IF_ERROR(Backward(op.micro));
      continue;
    }
    const int64_t from = op.micro * batch_rows / parts;
    const int64_t to = (op.micro + 1) * batch_rows / parts;
    const double share =
        parts > 1 ? static_cast<double>(to - from) / static_cast<double>(batch_rows) : 1.0;
    SPARSELINK_RETURN_IF_ERROR(Forward(op.micro, first() ? images.slice(0, from, to) : images,
                                       to - from, share,
                                       last() ? labels.slice(0, from, to) : labels, loss, correct));
  }
  return Status::Ok();
}

Result<int64_t> PipelineRank::EvaluateBatch(const torch::Tensor& images,
                                            const torch::Tensor& labels, int64_t rows) {
  torch::NoGradGuard no_grad;
  const bool dense = options_.boundary.policy == RoutingPolicy::kDense;
  torch::Tensor x = images;
  if (!first()) {
    const size_t b = static_cast<size_t>(rank_ - 1);
    SPARSELINK_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes,
                                Receive(*in_.activation, b, in_.peer, "evaluation activation"));
    std::vector<int64_t> sizes{rows};
    sizes.insert(sizes.end(), shapes_[b].begin(), shapes_[b].end());
    if (dense) {
      SPARSELINK_ASSIGN_OR_RETURN(x, FromRawBytes(bytes, sizes));
    } else {
      auto decoded = receiver_->DecodeActivation(bytes, rows, 0, /*count=*/false);
      if (!decoded.ok())
        return Status(decoded.status().code(), Where(b, "evaluation activation", in_.peer) + ": " +
                                                   decoded.status().message());
      x = decoded->reshape(sizes);
    }
  }
  const torch::Tensor y = stage()->forward(x);
  if (last()) return y.argmax(1).eq(labels).sum().item<int64_t>();
  if (dense) {
    SPARSELINK_RETURN_IF_ERROR(Send(*out_.activation, RawBytes(y), 0, false, true));
    return int64_t{0};
  }
  SPARSELINK_RETURN_IF_ERROR(sender_->EncodeActivation(y, 0, /*count=*/false));
  SPARSELINK_RETURN_IF_ERROR(Send(*out_.activation, sender_->packet(), 0, false, true));
  return int64_t{0};
}

std::vector<torch::Tensor> PipelineRank::Parameters() const {
  std::vector<torch::Tensor> parameters;
  for (const auto& p : stage()->parameters()) parameters.push_back(p);
  return parameters;
}

uint64_t PipelineRank::SentBytes() const {
  uint64_t bytes = 0;
  for (const EndChannels* end : {&in_, &out_}) {
    for (const auto* link : {&end->activation, &end->gradient, &end->summary, &end->negotiation_out,
                             &end->negotiation_back}) {
      if (*link) bytes += (*link)->stats().wire_bytes;
    }
  }
  return bytes;
}

std::vector<BoundaryReport> PipelineRank::LocalReports() const {
  std::vector<BoundaryReport> reports;
  if (sender_) {
    BoundaryReport r = sender_report_;
    r.history = sender_->negotiator().history();
    r.contract = sender_->contract();
    r.sensitivity.assign(sender_->map().values().begin(), sender_->map().values().end());
    r.time = sender_->time();
    for (const auto& p : BoundaryTime::kPhases) r.route_seconds += r.time.*p.seconds;
    reports.push_back(std::move(r));
  }
  if (receiver_) {
    BoundaryReport r = receiver_report_;
    r.contract = receiver_->contract();
    r.receiver_sensitivity.assign(receiver_->map().values().begin(),
                                  receiver_->map().values().end());
    r.time = receiver_->time();
    for (const auto& p : BoundaryTime::kPhases) r.route_seconds += r.time.*p.seconds;
    reports.push_back(std::move(r));
  }
  return reports;
}

}  // namespace sparselink::torch_adapter::internal
