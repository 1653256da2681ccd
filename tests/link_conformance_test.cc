// The link conformance suite (link_conformance.hpp) over the in-process backend: the two ranks
// are threads sharing one hub.
#include "link_conformance.hpp"

#include <thread>

namespace sparselink {
namespace {

void InProcessRunner(const conformance::RankBody& body) {
  auto hub = MakeInProcessHub(2);
  ASSERT_TRUE(hub.ok());
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      auto transport = MakeInProcessRank(*hub, r);
      ASSERT_TRUE(transport.ok()) << transport.status().ToString();
      body(**transport);
    });
  }
  for (auto& rank : ranks) rank.join();
}

SPARSELINK_LINK_CONFORMANCE(InProcess, InProcessRunner)

TEST(InProcessTransport, RefusesABadWorldOrRank) {
  EXPECT_EQ(MakeInProcessHub(0).status().code(), ErrorCode::kInvalidArgument);
  auto hub = MakeInProcessHub(2);
  ASSERT_TRUE(hub.ok());
  EXPECT_EQ(MakeInProcessRank(*hub, 2).status().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(MakeInProcessRank(nullptr, 0).status().code(), ErrorCode::kInvalidArgument);
}

TEST(InProcessTransport, AllGatherTimesOutWhenARankStaysAway) {
  auto hub = MakeInProcessHub(2);
  ASSERT_TRUE(hub.ok());
  auto transport = MakeInProcessRank(*hub, 0);
  ASSERT_TRUE(transport.ok());
  auto all = (*transport)->AllGather({}, std::chrono::milliseconds(30));
  ASSERT_FALSE(all.ok());
  EXPECT_EQ(all.status().code(), ErrorCode::kTimeout);
  EXPECT_NE(all.status().message().find("1 of 2 ranks arrived"), std::string::npos);
}

}  // namespace
}  // namespace sparselink
