// A boundary's part of a checkpoint (boundary_ends.hpp): the settings a resumed run must
// share, and the state each end carries from one step to the next. Between two steps an end
// holds no micro-batch and no negotiation in flight, so its state is its sensitivity map (in
// the map's own format, EMA included, so the next update gives the bits it would have), its
// contract, the sender's negotiation history and the receiver's last summary (the stand-in
// for every dropped gradient until the next one), the step, and the times of its phases.
// Everything read is checked against this boundary: a map of another size, a contract of
// another boundary or out of range, a summary of another width.
#include <cstdio>
#include <string>

#include "torch/boundary_ends.hpp"
#include "torch/state_bytes.hpp"

namespace sparselink::torch_adapter::internal {
namespace {

std::string Line(const std::string& key, double value) {
  char text[48];
  std::snprintf(text, sizeof text, "%s=%.17g\n", key.c_str(), value);
  return text;
}
std::string Line(const std::string& key, std::string_view value) {
  return key + "=" + std::string(value) + "\n";
}

void SaveContract(const Contract& c, StateWriter& w) {
  w.U32(c.boundary);
  w.U32(c.version);
  w.F64(c.keep);
  w.F64(c.keep_full);
  for (uint8_t v : {static_cast<uint8_t>(c.full_codec), static_cast<uint8_t>(c.lossy_codec),
                    static_cast<uint8_t>(c.rest), static_cast<uint8_t>(c.granularity),
                    static_cast<uint8_t>(c.bound_by)}) {
    w.U8(v);
  }
}

Status LoadContract(StateReader& r, size_t boundary, Contract* c) {
  SPARSELINK_RETURN_IF_ERROR(r.U32("contract.boundary", &c->boundary));
  SPARSELINK_RETURN_IF_ERROR(r.U32("contract.version", &c->version));
  SPARSELINK_RETURN_IF_ERROR(r.F64("contract.keep", &c->keep));
  SPARSELINK_RETURN_IF_ERROR(r.F64("contract.keep_full", &c->keep_full));
  uint8_t v[5] = {};
  for (uint8_t& field : v) SPARSELINK_RETURN_IF_ERROR(r.U8("contract.codes", &field));
  c->full_codec = static_cast<ValueCodec>(v[0]);
  c->lossy_codec = static_cast<ValueCodec>(v[1]);
  c->rest = static_cast<RestCodec>(v[2]);
  c->granularity = static_cast<Granularity>(v[3]);
  c->bound_by = static_cast<BoundBy>(v[4]);
  if (c->boundary != boundary) {
    return FieldError(ErrorCode::kCorruptPacket, r.what() + ".contract.boundary", c->boundary,
                      "expected " + std::to_string(boundary));
  }
  if (Status valid = c->Validate(); !valid.ok()) {
    return Status(ErrorCode::kCorruptPacket, r.what() + ": " + valid.message());
  }
  return Status::Ok();
}

void SaveHistory(const std::vector<NegotiationRecord>& history, StateWriter& w) {
  w.U64(history.size());
  for (const NegotiationRecord& h : history) {
    w.U64(h.step);
    w.U8(h.changed ? 1 : 0);
    SaveContract(h.contract, w);
    w.U64(h.stages.size());
    for (const auto& s : h.stages) {
      w.U8(static_cast<uint8_t>(s.state));
      w.F64(s.keep);
      w.U8(static_cast<uint8_t>(s.reason));
    }
  }
}

Status LoadHistory(StateReader& r, size_t boundary, std::vector<NegotiationRecord>* history) {
  uint64_t count = 0;
  SPARSELINK_RETURN_IF_ERROR(r.U64("history", &count));
  // A record takes at least 44 bytes: no count may claim more records than bytes allow.
  if (count > r.left() / 44) {
    return FieldError(ErrorCode::kCorruptPacket, r.what() + ".history", count,
                      "more records than the bytes left hold");
  }
  history->assign(count, NegotiationRecord{});
  for (NegotiationRecord& h : *history) {
    uint8_t changed = 0;
    SPARSELINK_RETURN_IF_ERROR(r.U64("history.step", &h.step));
    SPARSELINK_RETURN_IF_ERROR(r.U8("history.changed", &changed));
    h.changed = changed != 0;
    SPARSELINK_RETURN_IF_ERROR(LoadContract(r, boundary, &h.contract));
    uint64_t stages = 0;
    SPARSELINK_RETURN_IF_ERROR(r.U64("history.stages", &stages));
    if (stages > kNumNegotiationStates) {
      return FieldError(ErrorCode::kCorruptPacket, r.what() + ".history.stages", stages,
                        "a negotiation passes at most " + std::to_string(kNumNegotiationStates));
    }
    h.stages.resize(stages);
    for (auto& s : h.stages) {
      uint8_t state = 0, reason = 0;
      SPARSELINK_RETURN_IF_ERROR(r.U8("history.state", &state));
      SPARSELINK_RETURN_IF_ERROR(r.F64("history.keep", &s.keep));
      SPARSELINK_RETURN_IF_ERROR(r.U8("history.reason", &reason));
      if (state >= kNumNegotiationStates || reason >= kNumBoundBy) {
        return FieldError(ErrorCode::kCorruptPacket, r.what() + ".history.state", int(state),
                          "or its reason " + std::to_string(reason) + " out of range");
      }
      s.state = static_cast<NegotiationState>(state);
      s.reason = static_cast<BoundBy>(reason);
    }
  }
  return Status::Ok();
}

void SaveTime(const BoundaryTime& t, StateWriter& w) {
  for (const auto& p : BoundaryTime::kPhases) w.F64(t.*p.seconds);
}

Status LoadTime(StateReader& r, BoundaryTime* t) {
  for (const auto& p : BoundaryTime::kPhases)
    SPARSELINK_RETURN_IF_ERROR(r.F64(p.name, &(t->*p.seconds)));
  return Status::Ok();
}

// The map in its own format (SensitivityMap::Serialize), which must fit the boundary.
Status LoadMap(StateReader& r, const BoundarySpec& spec, std::optional<SensitivityMap>* map) {
  std::vector<uint8_t> bytes;
  SPARSELINK_RETURN_IF_ERROR(r.Bytes("map", &bytes));
  auto loaded = SensitivityMap::Deserialize(bytes);
  if (!loaded.ok()) {
    return Status(loaded.status().code(), r.what() + ".map: " + loaded.status().message());
  }
  if (loaded->num_neurons() != spec.cols || loaded->block() != spec.block) {
    return FieldError(
        ErrorCode::kCorruptPacket, r.what() + ".map.num_neurons", loaded->num_neurons(),
        "expected " + std::to_string(spec.cols) + " in units of " + std::to_string(spec.block) +
            " (block " + std::to_string(loaded->block()) + " read)");
  }
  map->emplace(std::move(loaded).value());
  return Status::Ok();
}

}  // namespace

std::string BoundaryConfig(const RoutedBoundaryOptions& o) {
  std::string c = Line("boundary.policy", RoutingPolicyName(o.policy));
  c += o.keep ? Line("boundary.keep", *o.keep) : Line("boundary.keep", std::string_view("auto"));
  c += Line("boundary.keep_full", o.keep_full);
  c += Line("boundary.full_codec", Traits(o.full_codec).name);
  c += Line("boundary.lossy_codec", Traits(o.lossy_codec).name);
  c += Line("boundary.gradient_codec", Traits(o.gradient_codec).name);
  c += Line("boundary.index_codec", IndexCodecName(o.index_codec));
  c += Line("boundary.zstd", o.zstd ? double(o.zstd_level) : std::nan(""));
  c += Line("boundary.eps", o.eps);
  c += Line("boundary.per_channel_maps", o.per_channel_maps ? 1.0 : 0.0);
  c += Line("boundary.negotiate_every", o.negotiate_every);
  c += Line("boundary.summary_every", o.summary_every);
  c += Line("boundary.tau_send", o.negotiator.tau_send);
  c += Line("boundary.tau_recv", o.negotiator.tau_recv);
  c += Line("boundary.keep_min", o.negotiator.keep_min);
  c += Line("boundary.keep_max", o.negotiator.keep_max);
  c += Line("boundary.hysteresis", o.negotiator.hysteresis);
  c += Line("boundary.initial_keep", o.initial_keep);
  c += Line("boundary.link_budget", o.link_budget_bytes_per_step);
  c += Line("boundary.link_budget_auto", o.link_budget_auto ? 1 : 0);
  c += Line("boundary.sensitivity", SensitivityModeName(o.sensitivity_mode));
  c += Line("boundary.sensitivity_alpha", o.sensitivity_alpha);
  c += Line("boundary.ema_decay", o.ema_decay);
  c += Line("boundary.link_bandwidth", o.link.bandwidth_bits_per_s);
  c += Line("boundary.link_latency_ns", static_cast<double>(o.link.latency.count()));
  c += Line("boundary.link_loss", o.link.loss_rate);
  c += Line("boundary.link_corrupt", o.link.corrupt_rate);
  c += Line("boundary.link_fault_seed", static_cast<double>(o.link.fault_seed));
  return c + Line("boundary.seed", static_cast<double>(o.seed));
}

void SaveReportCounters(const BoundaryReport& b, StateWriter& w) {
  for (uint64_t v : {uint64_t{b.boundary}, uint64_t{b.cols}, uint64_t{b.block},
                     b.forward_wire_bytes, b.backward_wire_bytes, b.dense_fp32_bytes, b.packets,
                     b.retransmits, b.retransmit_wire_bytes, b.corrupt_packets, b.lost_packets}) {
    w.U64(v);
  }
  w.F64(b.modelled_link_seconds);
  w.F64(b.route_seconds);
  SaveTime(b.time, w);
}

Status LoadReportCounters(StateReader& r, BoundaryReport* b) {
  uint64_t boundary = 0, cols = 0, block = 0;
  for (uint64_t* v : {&boundary, &cols, &block, &b->forward_wire_bytes, &b->backward_wire_bytes,
                      &b->dense_fp32_bytes, &b->packets, &b->retransmits, &b->retransmit_wire_bytes,
                      &b->corrupt_packets, &b->lost_packets}) {
    SPARSELINK_RETURN_IF_ERROR(r.U64("report.counters", v));
  }
  if (boundary != b->boundary || cols != b->cols || block != b->block) {
    return FieldError(ErrorCode::kCorruptPacket, r.what() + ".report.boundary", boundary,
                      "expected boundary " + std::to_string(b->boundary) + " of " +
                          std::to_string(b->cols) + " cols");
  }
  SPARSELINK_RETURN_IF_ERROR(r.F64("report.modelled_link_seconds", &b->modelled_link_seconds));
  SPARSELINK_RETURN_IF_ERROR(r.F64("report.route_seconds", &b->route_seconds));
  return LoadTime(r, &b->time);
}

Status BoundarySender::SaveState(StateWriter& w) const {
  if (!in_flight_.empty() || proposal_ || announced_) {
    return FieldError(ErrorCode::kInvalidArgument, "sender state", spec_.boundary,
                      "a step or negotiation is in flight; save between steps");
  }
  w.Bytes(map_->Serialize());
  SaveContract(contract_, w);
  SaveHistory(negotiator_->history(), w);
  w.Floats(summary_);
  w.I64(step);
  SaveTime(time_, w);
  return Status::Ok();
}

Status BoundarySender::LoadState(StateReader& r) {
  SPARSELINK_RETURN_IF_ERROR(LoadMap(r, spec_, &map_));
  SPARSELINK_RETURN_IF_ERROR(LoadContract(r, spec_.boundary, &contract_));
  std::vector<NegotiationRecord> history;
  SPARSELINK_RETURN_IF_ERROR(LoadHistory(r, spec_.boundary, &history));
  SPARSELINK_ASSIGN_OR_RETURN(
      Negotiator negotiator,
      Negotiator::Resume(spec_.options->negotiator, contract_, std::move(history)));
  negotiator_.emplace(std::move(negotiator));
  SPARSELINK_RETURN_IF_ERROR(r.Floats("summary", &summary_));
  if (summary_.size() != spec_.cols) {
    return FieldError(ErrorCode::kCorruptPacket, r.what() + ".summary", summary_.size(),
                      "values, expected cols = " + std::to_string(spec_.cols));
  }
  SPARSELINK_RETURN_IF_ERROR(r.I64("step", &step));
  unit_scores_.assign(map_->num_units(), 0.0f);
  return LoadTime(r, &time_);
}

Status BoundaryReceiver::SaveState(StateWriter& w) const {
  if (!in_flight_.empty()) {
    return FieldError(ErrorCode::kInvalidArgument, "receiver state", spec_.boundary,
                      "a micro-batch is in flight; save between steps");
  }
  w.Bytes(map_->Serialize());
  SaveContract(contract_, w);
  w.I64(step);
  SaveTime(time_, w);
  return Status::Ok();
}

Status BoundaryReceiver::LoadState(StateReader& r) {
  SPARSELINK_RETURN_IF_ERROR(LoadMap(r, spec_, &map_));
  SPARSELINK_RETURN_IF_ERROR(LoadContract(r, spec_.boundary, &contract_));
  SPARSELINK_RETURN_IF_ERROR(r.I64("step", &step));
  return LoadTime(r, &time_);
}

}  // namespace sparselink::torch_adapter::internal
