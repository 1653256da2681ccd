// A negotiation between two processes: Negotiate split into Propose (sender), CounterProposal
// (receiver) and Settle (sender), with the two messages as negotiation packets. The split must
// give exactly Negotiate's contracts and records; the packets must carry the messages bit for
// bit and refuse anything the format forbids.
#include <gtest/gtest.h>

#include <bit>
#include <random>

#include "packet_test_util.hpp"
#include "sparselink/codec.hpp"
#include "sparselink/contract.hpp"

namespace sparselink {
namespace {

using packet_test::Reseal;

SensitivityMap MapOf(const std::vector<float>& scores, size_t block = 1) {
  auto map = SensitivityMap::Create({.num_neurons = scores.size() * block, .block = block});
  EXPECT_TRUE(map.ok());
  EXPECT_TRUE(map->UpdateUnitScores(scores).ok());
  return std::move(map).value();
}

void ExpectSameRecord(const NegotiationRecord& a, const NegotiationRecord& b) {
  ASSERT_EQ(a.stages.size(), b.stages.size());
  for (size_t i = 0; i < a.stages.size(); ++i) {
    EXPECT_EQ(a.stages[i].state, b.stages[i].state);
    EXPECT_EQ(std::bit_cast<uint64_t>(a.stages[i].keep), std::bit_cast<uint64_t>(b.stages[i].keep));
    EXPECT_EQ(a.stages[i].reason, b.stages[i].reason);
  }
  EXPECT_EQ(a.contract.keep, b.contract.keep);
  EXPECT_EQ(a.contract.version, b.contract.version);
  EXPECT_EQ(a.contract.bound_by, b.contract.bound_by);
  EXPECT_EQ(a.changed, b.changed);
}

// Random maps, budgets and caps over many rounds: one negotiator negotiating in one call and
// another in three moves, with both messages through packets, agree on every record.
TEST(NegotiationSplit, EqualsNegotiateThroughPackets) {
  std::mt19937 rng(7);
  std::lognormal_distribution<float> score(0.0f, 1.5f);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const NegotiatorOptions options{.tau_send = 0.9, .tau_recv = 0.8, .keep_min = 0.02};
  const Contract initial{
      .keep = 0.1, .full_codec = ValueCodec::kFp16, .lossy_codec = ValueCodec::kInt8};
  auto whole = Negotiator::Create(options, initial);
  auto split = Negotiator::Create(options, initial);
  ASSERT_TRUE(whole.ok() && split.ok());
  for (uint64_t step = 0; step < 300; ++step) {
    const size_t cols = 64 + step % 7 * 33;
    const size_t rows = 1 + step % 5 * 40;
    std::vector<float> sender_scores(cols), receiver_scores(cols / 4);
    for (float& s : sender_scores) s = score(rng);
    for (float& s : receiver_scores) s = score(rng);
    const SensitivityMap sender_map = MapOf(sender_scores);
    const SensitivityMap receiver_map = MapOf(receiver_scores);
    const auto budget = [&](double scale) {
      return unit(rng) < 0.3 ? std::numeric_limits<double>::infinity() : unit(rng) * scale;
    };
    const SenderView sender{.map = &sender_map,
                            .link_bytes_per_step = budget(double(rows * cols) * 2),
                            .gradient_codec = ValueCodec::kInt8,
                            .link_budget_reason = BoundBy::kSharedBudget};
    const ReceiverView receiver{.map = step % 3 == 0 ? nullptr : &receiver_map,
                                .compute_entries_per_step = budget(double(rows * cols)),
                                .buffer_bytes = budget(double(rows * cols) * 2)};
    auto record = whole->Negotiate(sender, receiver, rows, cols, step);
    ASSERT_TRUE(record.ok()) << record.status().ToString();

    const PacketLabel label{
        .boundary = 3, .contract_version = split->contract().version, .step = step};
    auto proposal = split->Propose(sender, rows, cols);
    ASSERT_TRUE(proposal.ok()) << proposal.status().ToString();
    std::vector<uint8_t> packet;
    ASSERT_TRUE(EncodeProposal(*proposal, label, &packet).ok());
    auto received = DecodeProposal(packet);
    ASSERT_TRUE(received.ok()) << received.status().ToString();
    auto counter = CounterProposal(*received, receiver, options, split->contract(), 1);
    ASSERT_TRUE(counter.ok()) << counter.status().ToString();
    ASSERT_TRUE(EncodeCounter(*counter, label, &packet).ok());
    auto answered = DecodeCounter(packet);
    ASSERT_TRUE(answered.ok()) << answered.status().ToString();
    ExpectSameRecord(*record, split->Settle(*proposal, *answered, step));
  }
  EXPECT_GT(whole->contract().version, 5u);  // the rounds did move the contract
}

const std::vector<uint8_t> kGoldenProposal = {
    0x53, 0x50, 0x4c, 0x4b, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00,
    0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x32, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x0a, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00, 0x05, 0x09, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x9a, 0x99, 0x99, 0x99, 0x99, 0x99, 0xb9, 0x3f, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xd0, 0x3f, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0xdd, 0xb7, 0x59, 0x8b, 0x56, 0x2e, 0x18, 0xb6};

// A proposal's exact bytes: any change to the layout is loud (and wants a format version).
TEST(NegotiationPacket, GoldenProposal) {
  const Proposal p{.keep = 0.1,
                   .reason = BoundBy::kSenderLinkBudget,
                   .link_cap = 0.25,
                   .link_reason = BoundBy::kSharedBudget,
                   .rows = 128,
                   .cols = 1024};
  std::vector<uint8_t> packet;
  ASSERT_TRUE(EncodeProposal(p, {.boundary = 2, .contract_version = 5, .step = 50}, &packet).ok());
  ASSERT_EQ(packet.size(), 64u + 12 + 40 + 8);
  EXPECT_EQ(packet, kGoldenProposal) << packet_test::HexDump(packet);
  auto info = InspectPacket(packet);
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  EXPECT_EQ(info->header.kind, PacketKind::kNegotiation);
  EXPECT_EQ(info->header.step, 50u);
}

// Each forbidden value, resealed so that only the field check can catch it.
TEST(NegotiationPacket, RefusesWhatTheFormatForbids) {
  const Proposal p{.keep = 0.1, .link_cap = 0.5, .rows = 8, .cols = 64};
  std::vector<uint8_t> good;
  ASSERT_TRUE(EncodeProposal(p, {}, &good).ok());
  const size_t body = 64 + 12;
  struct Case {
    size_t offset;
    std::vector<uint8_t> bytes;
    const char* field;
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto f64 = [](double v) {
    std::vector<uint8_t> b(8);
    std::memcpy(b.data(), &v, 8);
    return b;
  };
  const std::vector<Case> cases = {
      {0, {7}, "negotiation_body.stage"},
      {1, {kNumBoundBy}, "negotiation_body.reason"},
      {2, {200}, "negotiation_body.cap_reason"},
      {5, {1}, "negotiation_body.reserved[2]"},
      {8, f64(1.5), "negotiation_body.keep"},
      {8, f64(nan), "negotiation_body.keep"},
      {16, f64(-0.25), "negotiation_body.cap"},
      {24, {0, 0, 0, 0, 0, 0, 0, 0}, "negotiation_body.rows"},
      {32, {0, 0, 0, 0, 1, 0, 0, 0}, "negotiation_body.cols"},
  };
  for (const Case& c : cases) {
    std::vector<uint8_t> bad = good;
    std::copy(c.bytes.begin(), c.bytes.end(), bad.begin() + body + c.offset);
    Reseal(bad);
    auto got = DecodeProposal(bad);
    ASSERT_FALSE(got.ok()) << c.field;
    EXPECT_NE(got.status().message().find(c.field), std::string::npos) << got.status().message();
  }
  // A counter is not a proposal, and a counter carries no shape.
  std::vector<uint8_t> counter;
  ASSERT_TRUE(EncodeCounter({.keep = 0.2, .bound = 0.3}, {}, &counter).ok());
  EXPECT_NE(DecodeProposal(counter).status().message().find("expected a proposal"),
            std::string::npos);
  EXPECT_TRUE(DecodeCounter(counter).ok());
  // The encoders refuse what the decoders would.
  EXPECT_FALSE(EncodeProposal({.keep = 2.0, .rows = 1, .cols = 1}, {}, &counter).ok());
  EXPECT_FALSE(EncodeProposal({.keep = 0.1, .rows = 0, .cols = 1}, {}, &counter).ok());
  EXPECT_FALSE(EncodeCounter({.keep = 0.1}, {.micro_batch = 1}, &counter).ok());
}

// The receiver's side checks the proposal it was sent: a peer's message is untrusted.
TEST(NegotiationSplit, CounterRefusesABadProposal) {
  const NegotiatorOptions options;
  const Contract current{.keep = 0.1};
  EXPECT_FALSE(CounterProposal({.keep = 0.1, .rows = 0, .cols = 10}, {}, options, current, 1).ok());
  EXPECT_FALSE(
      CounterProposal({.keep = 0.1, .link_cap = 3, .rows = 1, .cols = 10}, {}, options, current, 1)
          .ok());
  EXPECT_TRUE(CounterProposal({.keep = 0.1, .rows = 1, .cols = 10}, {}, options, current, 1).ok());
}

}  // namespace
}  // namespace sparselink
