// cluster_recovery.h: the identity that tells "etcd lost its data" from "a new cluster" (against
// a real etcd whose data is wiped), the era that keeps epochs above the fences, the specs kept
// on disk, and the ranking that picks the freshest copy of a recovered volume.
#include "replica/cluster_recovery.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "cluster/etcd_test_util.h"

namespace spd {
namespace {

using namespace std::chrono_literals;

std::string TempDir() {
  char tmpl[] = "/tmp/spd-recovery-XXXXXX";
  const char* d = mkdtemp(tmpl);
  return d != nullptr ? d : "";
}

TEST(ClusterRecoveryTest, EpochsOfALaterEraAreAboveEveryEarlierOne) {
  EXPECT_EQ(EpochOf(0, 12345), 12345u);  // era 0: the epoch is the create revision, as before
  EXPECT_GT(EpochOf(1, 1), EpochOf(0, (int64_t{1} << kEraShift) - 1));
  EXPECT_EQ(RevisionOf(EpochOf(3, 77)), 77);
  EXPECT_EQ(EraOf(EpochOf(3, 77)), 3u);
}

ReplicaActivity::Snapshot Act(uint64_t epoch, uint64_t max_seq, bool primary = false,
                              bool resyncing = false, bool spoiled = false) {
  ReplicaActivity::Snapshot s;
  s.epoch = epoch;
  s.max_seq = max_seq;
  s.primary = primary;
  s.resyncing = resyncing;
  s.spoiled = spoiled;
  s.complete = !spoiled;
  return s;
}

TEST(ClusterRecoveryTest, TheFreshestCopyWinsOnceEveryCopyStood) {
  const std::vector<std::string> placed{"a", "b", "c"};
  std::map<std::string, CandidateRank> c;
  // a: an older term; b: the last term's primary; c: a replica of it that applied as much.
  c["a"] = RankOf(Act(5, 900), {5, 880});
  c["b"] = RankOf(Act(7, 40, /*primary=*/true), {7, 0});
  EXPECT_EQ(ChooseRecoveryWinner(c, placed), "") << "c has not stood yet";
  c["c"] = RankOf(Act(7, 40), {7, 32});
  EXPECT_EQ(ChooseRecoveryWinner(c, placed), "b") << "the term's primary, at equal messages";
  // A replica being resynced in the last term holds only part of it, whatever it applied.
  c["b"] = RankOf(Act(7, 40, true, false, /*spoiled=*/true), {7, 0});
  c["c"] = RankOf(Act(7, 60, false, /*resyncing=*/true), {7, 32});
  c["a"] = RankOf(Act(7, 39), {7, 32});
  EXPECT_EQ(ChooseRecoveryWinner(c, placed), "a");
  // The highest message applied decides between whole replicas of a term.
  c["c"] = RankOf(Act(7, 45), {7, 32});
  EXPECT_EQ(ChooseRecoveryWinner(c, placed), "c");
  // Equal ranks: the first name, so that every node decides alike.
  c["a"] = c["c"];
  EXPECT_EQ(ChooseRecoveryWinner(c, placed), "a");
  // A copy with no record of its term stands with its durable generation only.
  const CandidateRank bare = RankOf(ReplicaActivity::Snapshot{}, {7, 50});
  EXPECT_EQ(bare.epoch, 7u);
  EXPECT_FALSE(bare.whole);
  EXPECT_LT(bare.Key(), c["c"].Key());
  // The rank crosses etcd as JSON; an asynchronous candidacy (no "whole") is not one.
  EXPECT_EQ(CandidateRank::FromJson(c["c"].ToJson()), c["c"]);
  EXPECT_FALSE(CandidateRank::FromJson(R"({"epoch": 7, "seq": 3})").has_value());
}

TEST(ClusterRecoveryTest, AnElectionGoesOnWithoutTheCopiesGivenUpOnThatHaveNotStood) {
  const std::vector<std::string> placed{"a", "b", "c"};
  std::map<std::string, CandidateRank> c;
  c["a"] = RankOf(Act(7, 39), {7, 32});
  c["b"] = RankOf(Act(7, 40), {7, 32});
  // Nothing given up on: every placed copy votes, and c has not stood.
  EXPECT_EQ(RecoveryVoters(placed, {}, c), placed);
  EXPECT_EQ(ChooseRecoveryWinner(c, RecoveryVoters(placed, {}, c)), "");
  // c given up on: the others decide, the best rank wins (not the node that asked).
  const std::vector<std::string> without_c{"c"};
  EXPECT_EQ(RecoveryVoters(placed, without_c, c), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ChooseRecoveryWinner(c, RecoveryVoters(placed, without_c, c)), "b");
  // c stands after all: it votes again (it may hold the last writes) and may win.
  c["c"] = RankOf(Act(7, 45), {7, 32});
  EXPECT_EQ(RecoveryVoters(placed, without_c, c), placed);
  EXPECT_EQ(ChooseRecoveryWinner(c, RecoveryVoters(placed, without_c, c)), "c");
  // A name given up on that is not placed changes nothing.
  EXPECT_EQ(RecoveryVoters(placed, {"zz"}, {}), placed);
}

TEST(ClusterRecoveryTest, CopiesThatHoldTheWinnersTermAsItDoesCountAsInSyncInIt) {
  std::map<std::string, CandidateRank> c;
  c["a"] = RankOf(Act(7, 40, /*primary=*/true), {7, 0});
  c["b"] = RankOf(Act(7, 40), {7, 32});                                  // applied the last message
  c["c"] = RankOf(Act(7, 39), {7, 32});                                  // missed one: not in sync
  c["d"] = RankOf(Act(7, 40, false, false, /*spoiled=*/true), {7, 32});  // failed a write
  c["e"] = RankOf(Act(6, 40), {6, 40});                                  // another term
  EXPECT_EQ(InSyncByRank(c, "a"), (std::vector<std::string>{"a", "b"}));
  // The winner's record holds messages 38 to 40: a copy that applied up to 37 lacks only those.
  c["a"].first = 38;
  c["c"].seq = 37;
  EXPECT_EQ(InSyncByRank(c, "a"), (std::vector<std::string>{"a", "b", "c"}));
  c["c"].seq = 36;  // message 37 may be missing there, and the record no longer holds it
  EXPECT_EQ(InSyncByRank(c, "a"), (std::vector<std::string>{"a", "b"}));
  // A winner that was not the term's primary (or is not whole) vouches for nobody.
  EXPECT_TRUE(InSyncByRank(c, "b").empty());
  c["a"] = RankOf(Act(7, 40, true, false, true), {7, 0});
  EXPECT_TRUE(InSyncByRank(c, "a").empty());
}

TEST(ClusterRecoveryTest, AnActivityRecordSaysWhatItHoldsOfItsTerm) {
  ReplicaActivity a;
  a.Begin(9, /*primary=*/false, /*resyncing=*/true);
  a.Record(9, 5, 0, 4096);
  a.Record(9, 3, 0, 4096);
  a.Record(8, 50, 0, 4096);  // another term's: not counted
  ReplicaActivity::Snapshot s = a.Take();
  EXPECT_EQ(s.max_seq, 5u);
  EXPECT_TRUE(s.resyncing);
  a.ResyncEnded(8);  // not this term's
  EXPECT_TRUE(a.Take().resyncing);
  a.ResyncEnded(9);
  EXPECT_FALSE(a.Take().resyncing);
  a.Begin(9, false, /*resyncing=*/true);  // a resync again within the term
  EXPECT_TRUE(a.Take().resyncing);
  a.Spoil();
  EXPECT_TRUE(a.Take().spoiled);
  a.Begin(10);
  s = a.Take();
  EXPECT_EQ(s.max_seq, 0u);
  EXPECT_FALSE(s.spoiled || s.resyncing);
}

TEST(ClusterRecoveryTest, SpecsAreKeptOnDisk) {
  const std::string dir = TempDir();
  ASSERT_FALSE(dir.empty());
  ASSERT_TRUE(SaveSpec(dir, "db1", R"({"size":1,"nodes":["a","b"]})").ok());
  ASSERT_TRUE(SaveSpec(dir, "db2", R"({"size":2})").ok());
  ASSERT_TRUE(SaveSpec(dir, "db1", R"({"size":3})").ok());  // replaced whole
  const auto specs = LoadSpecs(dir);
  ASSERT_EQ(specs.size(), 2u);
  EXPECT_EQ(specs.at("db1"), R"({"size":3})");
  std::filesystem::remove_all(dir);
}

class ClusterIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string err = etcd_.Start();
    if (err == etcd_test::kNoEtcd) GTEST_SKIP() << err;
    ASSERT_EQ(err, "");
    EtcdOptions o;
    o.endpoints = {etcd_.endpoint()};
    auto c = EtcdClient::Create(o);
    ASSERT_TRUE(c.ok());
    client_ = std::move(*c);
    a_ = TempDir();
    b_ = TempDir();
  }
  void TearDown() override {
    std::filesystem::remove_all(a_);
    std::filesystem::remove_all(b_);
  }
  etcd_test::EtcdProcess etcd_;
  std::unique_ptr<EtcdClient> client_;
  std::string a_, b_;
};

TEST_F(ClusterIdentityTest, TellsALostEtcdFromANewCluster) {
  // A new cluster: the first node makes the identity (era 0), the second adopts it.
  Result<IdentityCheck> a = CheckIdentity(client_.get(), a_, 0);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(a->created);
  EXPECT_FALSE(a->republish);
  EXPECT_EQ(a->current.era, 0u);
  Result<IdentityCheck> b = CheckIdentity(client_.get(), b_, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->created || b->republish || b->foreign);
  EXPECT_EQ(b->current, a->current);
  EXPECT_EQ(LoadIdentity(b_), a->current);
  // Looking again changes nothing.
  b = CheckIdentity(client_.get(), b_, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->created || b->republish);

  // etcd loses its data: the node that looks first knows the cluster, so it creates the same
  // identity again in a later era (above its fences' era 2) and must publish its volumes.
  etcd_.Stop();
  etcd_.WipeData();
  ASSERT_EQ(etcd_.Start(), "");
  a = CheckIdentity(client_.get(), a_, 2);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(a->created);
  EXPECT_TRUE(a->republish);
  EXPECT_EQ(a->current.id, b->current.id);
  EXPECT_EQ(a->current.era, 3u);
  EXPECT_NE(a->current.nonce, b->current.nonce);
  // Not saved before the caller published (a crash in between publishes again).
  EXPECT_EQ(LoadIdentity(a_), b->current);
  ASSERT_TRUE(SaveIdentity(a_, a->current).ok());
  // The other node sees the same id with another nonce: it publishes its own volumes too.
  b = CheckIdentity(client_.get(), b_, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->created);
  EXPECT_TRUE(b->republish);
  ASSERT_TRUE(SaveIdentity(b_, b->current).ok());
  b = CheckIdentity(client_.get(), b_, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->republish);

  // A fence of this era or later raises the era (once; a lower one leaves it).
  Result<IdentityCheck> r = RaiseEra(client_.get(), b_, 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->current.era, 4u);
  r = RaiseEra(client_.get(), b_, 1);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->current.era, 4u);
  EXPECT_EQ(LoadIdentity(b_)->era, 4u);

  // A node of another cluster is told so, and nothing is written.
  const std::string c = TempDir();
  ASSERT_TRUE(SaveIdentity(c, {"0123", 1, "ff"}).ok());
  Result<IdentityCheck> f = CheckIdentity(client_.get(), c, 0);
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->foreign);
  EXPECT_EQ(LoadIdentity(c)->id, "0123");
  std::filesystem::remove_all(c);
}

}  // namespace
}  // namespace spd
