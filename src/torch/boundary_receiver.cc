// The receiver end of a boundary (boundary_ends.hpp): activation packets into the next
// stage's input, the gradient and the summaries back, and the receiver's moves of a
// negotiation.
#include <algorithm>
#include <cmath>
#include <string>

#include "codec/own_mask.hpp"
#include "simd/kernels.hpp"
#include "torch/boundary_ends.hpp"

namespace sparselink::torch_adapter::internal {

Result<std::unique_ptr<BoundaryReceiver>> BoundaryReceiver::Create(const BoundarySpec& spec) {
  auto end = std::unique_ptr<BoundaryReceiver>(new BoundaryReceiver(spec));
  SPARSELINK_ASSIGN_OR_RETURN(SensitivityMap map, MakeBoundaryMap(spec));
  end->map_.emplace(std::move(map));
  end->contract_ = InitialContract(spec);
  return end;
}

Result<torch::Tensor> BoundaryReceiver::DecodeActivation(std::span<const uint8_t> bytes,
                                                         int64_t rows, uint32_t micro, bool count) {
  PhaseClock clock;
  const size_t cols = spec_.cols;
  // Decoded straight into the dense rows the next stage reads (and, training, the mask its
  // gradient will be gathered at): one pass, no column list or value array between. A packet
  // that decodes but carries another label has been written into both by then: the caller's
  // retry rewrites them, and a step whose tries all fail ends in an error.
  torch::Tensor dense = torch::empty({rows, static_cast<int64_t>(cols)}, torch::kFloat32);
  const MutableMatrix out{dense.data_ptr<float>(), static_cast<size_t>(rows), cols};
  const DecodeLimits limits{.parallel_min_entries = spec_.options->parallel_min_entries};
  PacketInfo info;
  InFlight* arrived = count ? &in_flight_[micro] : nullptr;
  const Status decoded =
      count ? DecodeActivationToDenseAndMask(bytes, out, &arrived->mask, limits, &info)
            : DecodeActivationToDense(bytes, out, limits, &info);
  if (!decoded.ok()) return decoded;
  SPARSELINK_RETURN_IF_ERROR(
      CheckLabel(info, LabelOf(spec_.boundary, contract_, step, count ? micro : 0)));
  if (count) arrived->received = dense;
  clock.Lap(&time_.forward_link_decode);
  return dense;
}

bool BoundaryReceiver::SummaryDue(uint32_t micro) const {
  return step % spec_.options->summary_every == 0 && micro == 0;
}

// A summary step reads every entry of the gradient (other steps read the kept ones, which the
// gradient encoder checks): a non-finite one is named where it is, rather than as the summary
// unit it would spoil, by the map's update (which checks as it sums) or, with the map frozen,
// when the column sums come out non-finite.
Status BoundaryReceiver::EncodeSummary(const torch::Tensor& grad, uint32_t micro) {
  PhaseClock clock;
  auto it = in_flight_.find(micro);
  if (it == in_flight_.end()) {
    return FieldError(ErrorCode::kInvalidArgument, "micro_batch", micro,
                      "no training forward of it is in flight");
  }
  const size_t cols = spec_.cols;
  const auto rows = static_cast<size_t>(grad.size(0));
  const float* g = grad.data_ptr<float>();
  // The receiver's own view of its inputs: Taylor on what it received, with its dense
  // gradient. It only matters at negotiations, so it is sampled at the summary cadence.
  if (!map_->frozen()) {
    SPARSELINK_RETURN_IF_ERROR(
        map_->Update({it->second.received.data_ptr<float>(), rows, cols}, {g, rows, cols}));
  }
  std::vector<float> mean_abs(cols, 0.0f);
  sums_.Sum(rows, cols, spec_.options->parallel_min_entries, mean_abs,
            [&](size_t first, size_t end, float* partial) {
              for (size_t r = first; r < end; ++r) simd::AddAbs(g + r * cols, cols, partial);
            });
  if (!simd::AllFinite(mean_abs.data(), cols)) {
    const float* bad = std::find_if(g, g + rows * cols, [](float v) { return !std::isfinite(v); });
    if (bad != g + rows * cols) {  // else finite |g| summed past FLT_MAX
      const auto i = static_cast<size_t>(bad - g);
      return FieldError(
          ErrorCode::kNonFinite,
          "gradient[" + std::to_string(i / cols) + "][" + std::to_string(i % cols) + "]", *bad,
          "must be finite");
    }
  }
  for (float& v : mean_abs) v /= static_cast<float>(rows);
  SPARSELINK_RETURN_IF_ERROR(sparselink::EncodeSummary(
      mean_abs, LabelOf(spec_.boundary, contract_, step, micro), &packet_, kSummaryCodec));
  clock.Lap(&time_.summary);
  return Status::Ok();
}

Status BoundaryReceiver::EncodeGradient(const torch::Tensor& grad, uint32_t micro) {
  PhaseClock clock;
  auto it = in_flight_.find(micro);
  if (it == in_flight_.end()) {
    return FieldError(ErrorCode::kInvalidArgument, "micro_batch", micro,
                      "no training forward of it is in flight");
  }
  const RoutedBoundaryOptions& o = *spec_.options;
  const auto rows = static_cast<size_t>(grad.size(0));
  // Receiver -> sender: the gradient at the kept positions only. The mask is this end's own,
  // made by the decoder for this micro-batch and never touched since: the encoder skips its
  // validation (codec/own_mask.hpp).
  SPARSELINK_RETURN_IF_ERROR(sparselink::internal::EncodeGradientFromDenseTrustedMask(
      it->second.mask, {grad.data_ptr<float>(), rows, spec_.cols}, o.gradient_codec,
      LabelOf(spec_.boundary, contract_, step, micro),
      {.index_codec = o.index_codec,
       .zstd = o.zstd,
       .zstd_level = o.zstd_level,
       .parallel_min_entries = o.parallel_min_entries},
      &packet_));
  in_flight_.erase(it);
  clock.Lap(&time_.gradient_encode);
  return Status::Ok();
}

Status BoundaryReceiver::Counter(std::span<const uint8_t> bytes) {
  PacketInfo info;
  SPARSELINK_ASSIGN_OR_RETURN(const Proposal proposal, DecodeProposal(bytes, {}, &info));
  SPARSELINK_RETURN_IF_ERROR(CheckLabel(info, LabelOf(spec_.boundary, contract_, step, 0)));
  if (proposal.cols != spec_.cols) {
    return FieldError(ErrorCode::kCorruptPacket, "proposal.cols", proposal.cols,
                      "must equal this boundary's cols = " + std::to_string(spec_.cols));
  }
  SPARSELINK_ASSIGN_OR_RETURN(const sparselink::Counter counter,
                              CounterProposal(proposal, {.map = &*map_}, spec_.options->negotiator,
                                              contract_, spec_.block));
  return EncodeCounter(counter, LabelOf(spec_.boundary, contract_, step, 0), &packet_);
}

Status BoundaryReceiver::Acknowledge(std::span<const uint8_t> bytes) {
  PacketInfo info;
  SPARSELINK_ASSIGN_OR_RETURN(const Contract announced, DecodeContract(bytes));
  if (announced.boundary != spec_.boundary) {
    return FieldError(ErrorCode::kCorruptPacket, "contract.boundary", announced.boundary,
                      "expected " + std::to_string(spec_.boundary));
  }
  if (announced.version != contract_.version && announced.version != contract_.version + 1) {
    return FieldError(ErrorCode::kCorruptPacket, "contract.version", announced.version,
                      "expected " + std::to_string(contract_.version) + " or the next");
  }
  if (announced.granularity != contract_.granularity ||
      announced.full_codec != contract_.full_codec ||
      announced.lossy_codec != contract_.lossy_codec || announced.rest != contract_.rest) {
    return FieldError(ErrorCode::kCorruptPacket, "contract", announced.ToString(),
                      "changes what negotiation never changes (codecs, granularity, rest)");
  }
  contract_ = announced;
  packet_.assign(bytes.begin(), bytes.end());  // the acknowledgement echoes it
  return Status::Ok();
}

}  // namespace sparselink::torch_adapter::internal
