#include "state/state_store.h"

#include "state/state_test_util.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

namespace spd::state {
namespace {

using namespace test_util;  // NOLINT: the tests' helpers
using policy::Role;

TEST(StateStore, TenantsPersistAndPutIsIdempotent) {
  TempDir dir;
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s);
    EXPECT_EQ(s->path(), dir.db());
    EXPECT_TRUE(s->PutTenant({"acme"}).ok());
    EXPECT_TRUE(s->PutTenant({"beta"}).ok());
    EXPECT_TRUE(s->PutTenant({"acme"}).ok());  // again: Ok, still one
    auto list = s->ListTenants();
    ASSERT_TRUE(list.ok());
    EXPECT_EQ(*list, (std::vector<policy::Tenant>{{"acme"}, {"beta"}}));
    EXPECT_EQ(s->GetTenant("nope").status().code(), StatusCode::kNotFound);
    EXPECT_EQ(s->DeleteTenant("nope").code(), StatusCode::kNotFound);
  }
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s);
  auto t = s->GetTenant("beta");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->name, "beta");
  EXPECT_TRUE(s->DeleteTenant("beta").ok());
  s.reset();
  s = OpenOk(dir.path());
  auto list = s->ListTenants();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(*list, (std::vector<policy::Tenant>{{"acme"}}));
}

// What a tenant's intent may hold (no latency target, durability or replica count), in varied
// shapes.
std::vector<policy::Intent> TenantIntents() {
  std::vector<policy::Intent> v;
  for (policy::Intent in : VariedIntents()) {
    in.latency.reset();
    in.durability.reset();
    in.replicas.reset();
    v.push_back(in);
  }
  return v;
}

TEST(StateStore, TenantIntentsRoundTripAndPutReplacesThem) {
  TempDir dir;
  const std::vector<policy::Intent> intents = TenantIntents();
  std::vector<policy::Tenant> want;
  {
    auto s = OpenOk(dir.path());
    for (size_t i = 0; i < intents.size(); ++i) {
      want.push_back({"t" + std::to_string(i), intents[i]});
      ASSERT_TRUE(s->PutTenant(want.back()).ok());
    }
    // Put replaces the intent: t0 had none, gets t1's; t1's goes; again changes nothing.
    ASSERT_TRUE(s->PutTenant({"t0", intents[1]}).ok());
    ASSERT_TRUE(s->PutTenant({"t0", intents[1]}).ok());
    ASSERT_TRUE(s->PutTenant({"t1", {}}).ok());
    want[0].intent = intents[1];
    want[1].intent = {};
  }
  auto s = OpenOk(dir.path());
  auto list = s->ListTenants();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(*list, want);
  for (const policy::Tenant& t : want) {
    auto one = s->GetTenant(t.name);
    ASSERT_TRUE(one.ok()) << one.status().ToString();
    EXPECT_EQ(*one, t);
  }
}

TEST(StateStore, StorageClassesRoundTripEveryIntentFieldExactly) {
  TempDir dir;
  const std::vector<policy::Intent> intents = VariedIntents();
  {
    auto s = OpenOk(dir.path());
    for (size_t i = 0; i < intents.size(); ++i)
      ASSERT_TRUE(s->PutStorageClass({"class" + std::to_string(i), intents[i]}).ok());
    // Put replaces: class0 had no fields, now has all; then the same put again.
    ASSERT_TRUE(s->PutStorageClass({"class0", FullIntent()}).ok());
    ASSERT_TRUE(s->PutStorageClass({"class0", FullIntent()}).ok());
  }
  auto s = OpenOk(dir.path());
  auto list = s->ListStorageClasses();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), intents.size());
  EXPECT_EQ((*list)[0], (policy::StorageClass{"class0", FullIntent()}));
  for (size_t i = 1; i < intents.size(); ++i) {
    EXPECT_EQ((*list)[i].name, "class" + std::to_string(i));
    EXPECT_EQ((*list)[i].defaults, intents[i]) << i;
    auto one = s->GetStorageClass("class" + std::to_string(i));
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(one->defaults, intents[i]) << i;
  }
  // Exactly, not approximately: the double that was put is the double that comes back.
  EXPECT_EQ((*list)[2].defaults.latency->percentile, 100.0 / 3.0);
  EXPECT_EQ(s->GetStorageClass("gold").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(s->DeleteStorageClass("class1").ok());
  EXPECT_EQ(s->DeleteStorageClass("class1").code(), StatusCode::kNotFound);
  EXPECT_EQ(s->ListStorageClasses()->size(), intents.size() - 1);
}

TEST(StateStore, VolumeMetaPersistsWithAndWithoutTenantAndClass) {
  TempDir dir;
  const std::vector<policy::Intent> intents = VariedIntents();
  std::vector<VolumeMeta> want;
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s->PutTenant({"acme"}).ok());
    ASSERT_TRUE(s->PutStorageClass({"gold", FullIntent()}).ok());
    for (size_t i = 0; i < intents.size(); ++i) {
      VolumeMeta m{"vol" + std::to_string(i), i % 2 ? "acme" : "", i % 3 ? "gold" : "", intents[i]};
      ASSERT_TRUE(s->PutVolumeMeta(m).ok());
      ASSERT_TRUE(s->PutVolumeMeta(m).ok());  // idempotent
      want.push_back(m);
    }
    // Replace: drop the tenant and class, change the intent.
    want[1] = VolumeMeta{"vol1", "", "", intents[0]};
    ASSERT_TRUE(s->PutVolumeMeta(want[1]).ok());
  }
  auto s = OpenOk(dir.path());
  auto list = s->ListVolumeMeta();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(*list, want);
  auto one = s->GetVolumeMeta("vol3");
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, want[3]);
  EXPECT_EQ(s->GetVolumeMeta("vol99").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(s->DeleteVolumeMeta("vol3").ok());
  EXPECT_EQ(s->DeleteVolumeMeta("vol3").code(), StatusCode::kNotFound);
  EXPECT_EQ(s->GetVolumeMeta("vol3").status().code(), StatusCode::kNotFound);
}

TEST(StateStore, UidRolesPersistAndPutReplaces) {
  TempDir dir;
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s->PutTenant({"acme"}).ok());
    ASSERT_TRUE(s->PutUidRole({0, Role::kAdmin, ""}).ok());
    ASSERT_TRUE(s->PutUidRole({1000, Role::kViewer, ""}).ok());
    ASSERT_TRUE(s->PutUidRole({1000, Role::kTenant, "acme"}).ok());  // replaces
    ASSERT_TRUE(s->PutUidRole({UINT32_MAX, Role::kOperator, ""}).ok());
  }
  auto s = OpenOk(dir.path());
  auto list = s->ListUidRoles();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_EQ(*list, (std::vector<UidRole>{{0, Role::kAdmin, ""},
                                         {1000, Role::kTenant, "acme"},
                                         {UINT32_MAX, Role::kOperator, ""}}));
  auto one = s->GetUidRole(1000);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, (UidRole{1000, Role::kTenant, "acme"}));
  EXPECT_EQ(s->GetUidRole(1).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(s->DeleteUidRole(0).ok());
  EXPECT_EQ(s->DeleteUidRole(0).code(), StatusCode::kNotFound);
  EXPECT_EQ(s->ListUidRoles()->size(), 2u);
}

TEST(StateStore, NamesIntentsAndRolesAreValidatedNamingTheField) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s->PutTenant({"acme"}).ok());
  auto expect_field = [](const Status& st, const char* field) {
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
    EXPECT_TRUE(StartsWith(st.message(), std::string(field) + ":")) << st.ToString();
  };
  expect_field(s->PutTenant({""}), "name");
  expect_field(s->PutTenant({"a b"}), "name");
  expect_field(s->PutTenant({std::string(65, 'a')}), "name");
  expect_field(s->GetTenant("../x").status(), "name");
  policy::Intent latency;
  latency.latency = policy::LatencyTarget{99, 2000};
  expect_field(s->PutTenant({"acme", latency}), "intent.latency");
  policy::Intent durability;
  durability.durability = Durability::kSync;
  expect_field(s->PutTenant({"acme", durability}), "intent.durability");
  expect_field(s->PutStorageClass({"-gold", {}}), "name");
  policy::Intent bad;
  bad.weight = 0;
  expect_field(s->PutStorageClass({"gold", bad}), "defaults.weight");
  expect_field(s->PutVolumeMeta({"vol/1", "", "", {}}), "volume");
  expect_field(s->PutVolumeMeta({"v", "a b", "", {}}), "tenant");
  expect_field(s->PutVolumeMeta({"v", "", ".x", {}}), "storage_class");
  expect_field(s->PutVolumeMeta({"v", "", "", bad}), "intent.weight");
  bad = FullIntent();
  bad.limit = policy::Rate{100, 0};
  expect_field(s->PutVolumeMeta({"v", "", "", bad}), "intent.limit.iops");

  expect_field(s->CreateToken(Role::kNone, "", "").status(), "role");
  expect_field(s->CreateToken(static_cast<Role>(9), "", "").status(), "role");
  expect_field(s->CreateToken(Role::kTenant, "", "").status(), "tenant");
  expect_field(s->CreateToken(Role::kAdmin, "acme", "").status(), "tenant");
  expect_field(s->CreateToken(Role::kTenant, "a b", "").status(), "tenant");
  expect_field(s->PutUidRole({5, Role::kNone, ""}), "role");
  expect_field(s->PutUidRole({5, Role::kTenant, ""}), "tenant");
  expect_field(s->PutUidRole({5, Role::kViewer, "acme"}), "tenant");
  // Nothing of the above was stored.
  EXPECT_EQ(*s->ListTenants(), (std::vector<policy::Tenant>{{"acme", {}}}));
  EXPECT_TRUE(s->ListStorageClasses()->empty());
  EXPECT_TRUE(s->ListVolumeMeta()->empty());
  EXPECT_TRUE(s->ListTokens()->empty());
  EXPECT_TRUE(s->ListUidRoles()->empty());
}

TEST(StateStore, ReferencesAreEnforcedBothWays) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  // Naming what does not exist.
  Status st = s->PutVolumeMeta({"v1", "acme", "", {}});
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "tenant") && Contains(st.message(), "'acme'"))
      << st.ToString();
  st = s->PutVolumeMeta({"v1", "", "gold", {}});
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "storage class") && Contains(st.message(), "'gold'"))
      << st.ToString();
  st = s->CreateToken(Role::kTenant, "acme", "").status();
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), "'acme'"));
  EXPECT_EQ(s->PutUidRole({1000, Role::kTenant, "acme"}).code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(s->ListVolumeMeta()->empty());

  // Deleting what is named: each kind of user holds the tenant on its own.
  ASSERT_TRUE(s->PutTenant({"acme"}).ok());
  ASSERT_TRUE(s->PutStorageClass({"gold", {}}).ok());
  ASSERT_TRUE(s->PutVolumeMeta({"v1", "acme", "gold", {}}).ok());
  st = s->DeleteTenant("acme");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "1 volume(s)") && Contains(st.message(), "'v1'"))
      << st.ToString();
  st = s->DeleteStorageClass("gold");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "'v1'")) << st.ToString();
  ASSERT_TRUE(s->PutVolumeMeta({"v1", "", "", {}}).ok());
  EXPECT_TRUE(s->DeleteStorageClass("gold").ok());

  auto tok = s->CreateToken(Role::kTenant, "acme", "ci");
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  st = s->DeleteTenant("acme");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "1 token(s)")) << st.ToString();
  ASSERT_TRUE(s->RevokeToken(tok->info.id).ok());

  ASSERT_TRUE(s->PutUidRole({1000, Role::kTenant, "acme"}).ok());
  st = s->DeleteTenant("acme");
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(st.message(), "1 uid role(s)")) << st.ToString();
  ASSERT_TRUE(s->PutUidRole({1000, Role::kViewer, ""}).ok());

  EXPECT_TRUE(s->DeleteTenant("acme").ok());
  EXPECT_EQ(s->GetTenant("acme").status().code(), StatusCode::kNotFound);
}

// Fills a kind up to its limit through `put(i)`; the next new key is kResourceExhausted,
// replacing an existing key still works, and a deleted key frees a place.
template <typename Put, typename Del>
void ExpectLimit(size_t max, Put put, Del del) {
  for (size_t i = 0; i < max; ++i) {
    Status st = put(i);
    ASSERT_TRUE(st.ok()) << i << ": " << st.ToString();
  }
  Status st = put(max);
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), std::to_string(max))) << st.ToString();
  EXPECT_TRUE(put(max - 1).ok());
  ASSERT_TRUE(del(0).ok());
  EXPECT_TRUE(put(max).ok());
  EXPECT_EQ(put(max + 1).code(), StatusCode::kResourceExhausted);
}

TEST(StateStore, TenantLimit) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ExpectLimit(
      kTenantsMax, [&](size_t i) { return s->PutTenant({"t" + std::to_string(i)}); },
      [&](size_t i) { return s->DeleteTenant("t" + std::to_string(i)); });
  EXPECT_EQ(s->ListTenants()->size(), kTenantsMax);
  // At the limit, replacing an existing tenant's intent still works.
  policy::Intent in;
  in.limit = policy::Rate{600, 0};
  EXPECT_TRUE(s->PutTenant({"t1", in}).ok());
  EXPECT_EQ(s->GetTenant("t1")->intent, in);
}

TEST(StateStore, StorageClassLimit) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ExpectLimit(
      kStorageClassesMax,
      [&](size_t i) {
        return s->PutStorageClass({"c" + std::to_string(i), FullIntent()});
      },
      [&](size_t i) { return s->DeleteStorageClass("c" + std::to_string(i)); });
  EXPECT_EQ(s->ListStorageClasses()->size(), kStorageClassesMax);
}

TEST(StateStore, VolumeMetaLimit) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ExpectLimit(
      kVolumeMetaMax,
      [&](size_t i) {
        return s->PutVolumeMeta({"v" + std::to_string(i), "", "", {}});
      },
      [&](size_t i) { return s->DeleteVolumeMeta("v" + std::to_string(i)); });
  EXPECT_EQ(s->ListVolumeMeta()->size(), kVolumeMetaMax);
}

TEST(StateStore, UidRoleLimit) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ExpectLimit(
      kUidRolesMax,
      [&](size_t i) {
        return s->PutUidRole({static_cast<uint32_t>(i), Role::kViewer, ""});
      },
      [&](size_t i) { return s->DeleteUidRole(static_cast<uint32_t>(i)); });
  EXPECT_EQ(s->ListUidRoles()->size(), kUidRolesMax);
}

TEST(StateStore, TokenLimit) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  std::vector<std::string> ids;
  for (size_t i = 0; i < kTokensMax; ++i) {
    auto t = s->CreateToken(Role::kViewer, "", "");
    ASSERT_TRUE(t.ok()) << i << ": " << t.status().ToString();
    ids.push_back(t->info.id);
  }
  auto over = s->CreateToken(Role::kAdmin, "", "one too many");
  EXPECT_EQ(over.status().code(), StatusCode::kResourceExhausted) << over.status().ToString();
  EXPECT_TRUE(Contains(over.status().message(), std::to_string(kTokensMax)));
  ASSERT_TRUE(s->RevokeToken(ids[0]).ok());
  auto again = s->CreateToken(Role::kAdmin, "", "");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(s->Authenticate(again->token).ok());
  auto list = s->ListTokens();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), kTokensMax);
}

TEST(StateStore, TokenDescriptionIsBoundedPrintableUtf8) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  EXPECT_TRUE(s->CreateToken(Role::kViewer, "", std::string(kTokenDescriptionBytesMax, 'd')).ok());
  // 128 two-byte characters: 256 bytes.
  std::string umlauts;
  for (int i = 0; i < 128; ++i) umlauts += "\xc3\xa4";
  auto u = s->CreateToken(Role::kViewer, "", umlauts);
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->info.description, umlauts);
  for (const std::string& bad :
       {std::string(kTokenDescriptionBytesMax + 1, 'd'), std::string("line\nbreak"),
        std::string("nul\0byte", 8), std::string("bad \xc3"), std::string("\xc0\xaf"),
        std::string("\xed\xa0\x80"), std::string("\x7f"), std::string("c1 \xc2\x85")}) {
    Status st = s->CreateToken(Role::kViewer, "", bad).status();
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(StartsWith(st.message(), "description:")) << st.ToString();
  }
  EXPECT_EQ(s->ListTokens()->size(), 2u);
}

TEST(StateStore, TokenAuthenticatesAndPersists) {
  TempDir dir;
  NewToken admin, tenant;
  {
    auto s = OpenOk(dir.path());
    ASSERT_TRUE(s->PutTenant({"acme"}).ok());
    auto a = s->CreateToken(Role::kAdmin, "", "ops laptop");
    auto t = s->CreateToken(Role::kTenant, "acme", "");
    ASSERT_TRUE(a.ok() && t.ok());
    admin = *a;
    tenant = *t;
  }
  // The shape promised in the header.
  for (const NewToken* n : {&admin, &tenant}) {
    const std::string& tok = n->token;
    ASSERT_EQ(tok.size(), kTokenChars);
    EXPECT_EQ(tok.size(), 4u + 12 + 1 + 43);
    EXPECT_TRUE(StartsWith(tok, "spd_" + n->info.id + "_"));
    EXPECT_EQ(n->info.id.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_EQ(n->info.id.size(), 12u);
    EXPECT_EQ(tok.substr(17).find_first_not_of(
                  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
              std::string::npos);
    EXPECT_GT(n->info.created_unix, 1'600'000'000);
  }
  EXPECT_NE(admin.token, tenant.token);
  auto s = OpenOk(dir.path());
  auto who = s->Authenticate(admin.token);
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_EQ(*who, admin.info);
  who = s->Authenticate(tenant.token);
  ASSERT_TRUE(who.ok()) << who.status().ToString();
  EXPECT_EQ(who->role, Role::kTenant);
  EXPECT_EQ(who->tenant, "acme");
  auto list = s->ListTokens();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  for (const TokenInfo& t : *list) EXPECT_TRUE(t == admin.info || t == tenant.info);
}

TEST(StateStore, ATokenExpiresAtItsTtlAndOnlyItsHolderIsToldSo) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s);
  auto forever = s->CreateToken(Role::kViewer, "", "no ttl");
  auto hour = s->CreateToken(Role::kOperator, "", "an hour", 3600);
  ASSERT_TRUE(forever.ok() && hour.ok());
  EXPECT_EQ(forever->info.expires_unix, 0);
  const int64_t created = hour->info.created_unix;
  EXPECT_EQ(hour->info.expires_unix, created + 3600);
  // Not yet expired: accepted, up to the last second before.
  for (int64_t now : {created, created + 3599}) {
    auto who = s->Authenticate(hour->token, now);
    ASSERT_TRUE(who.ok()) << now << ": " << who.status().ToString();
    EXPECT_EQ(*who, hour->info);
  }
  // From expires_unix on: refused, told apart from a wrong secret (kUnauthenticated).
  for (int64_t now : {created + 3600, created + 86400 * 365}) {
    auto who = s->Authenticate(hour->token, now);
    EXPECT_EQ(who.status().code(), StatusCode::kUnauthenticated) << now;
    EXPECT_TRUE(Contains(who.status().message(), "expired")) << who.status().ToString();
  }
  // Someone without the secret learns nothing about the expiry.
  std::string wrong = hour->token;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(s->Authenticate(wrong, created + 3600).status().code(), StatusCode::kPermissionDenied);
  // No ttl: accepted whenever.
  EXPECT_TRUE(s->Authenticate(forever->token, created + (int64_t{1} << 40)).ok());
  // Persisted and listed with the expiry.
  s.reset();
  s = OpenOk(dir.path());
  auto list = s->ListTokens();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  for (const TokenInfo& t : *list) EXPECT_TRUE(t == forever->info || t == hour->info);
  EXPECT_EQ(s->Authenticate(hour->token, created + 3600).status().code(),
            StatusCode::kUnauthenticated);
}

TEST(StateStore, ATokenTtlIsBounded) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s);
  for (int64_t bad : {int64_t{-1}, kTokenTtlSecondsMax + 1, INT64_MAX}) {
    auto t = s->CreateToken(Role::kViewer, "", "", bad);
    EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(StartsWith(std::string(t.status().message()), "ttl_seconds: ")) << bad;
  }
  auto max = s->CreateToken(Role::kViewer, "", "", kTokenTtlSecondsMax);
  ASSERT_TRUE(max.ok()) << max.status().ToString();
  EXPECT_EQ(max->info.expires_unix, max->info.created_unix + kTokenTtlSecondsMax);
  EXPECT_EQ(s->CreateToken(Role::kViewer, "", "", 1)->info.expires_unix > 0, true);
  EXPECT_EQ(s->ListTokens()->size(), 2u);
}

TEST(StateStore, EveryAlteredTokenIsRefusedTheSameWay) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  auto a = s->CreateToken(Role::kAdmin, "", "a");
  auto b = s->CreateToken(Role::kViewer, "", "b");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string tok = a->token;
  const std::string_view b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const std::string_view hex = "0123456789abcdef";

  auto expect_denied = [&](const std::string& t, const std::string& why) {
    Result<TokenInfo> r = s->Authenticate(t);
    ASSERT_FALSE(r.ok()) << why << ": " << t;
    EXPECT_EQ(r.status().code(), StatusCode::kPermissionDenied) << why;
    EXPECT_EQ(r.status().message(), "invalid or revoked API token") << why;
  };

  // Each character changed in turn, to another one of the same kind (so that the string keeps
  // the token's shape and only the hash comparison can refuse it) and to one that breaks it.
  for (size_t i = 0; i < tok.size(); ++i) {
    const size_t id_end = 4 + kTokenIdHexChars;
    std::string alike = tok;
    if (i >= 4 && i < id_end)
      alike[i] = hex[(hex.find(tok[i]) + 1) % hex.size()];
    else if (i > id_end)
      alike[i] = b64[(b64.find(tok[i]) + 1) % b64.size()];
    else
      alike[i] = tok[i] == 'x' ? 'y' : 'x';
    expect_denied(alike, "character " + std::to_string(i) + " changed");
    std::string broken = tok;
    broken[i] = '.';
    expect_denied(broken, "character " + std::to_string(i) + " made '.'");
  }
  // Another token's id with this token's secret, and the other way round.
  const std::string secret_a = tok.substr(4 + kTokenIdHexChars + 1);
  const std::string secret_b = b->token.substr(4 + kTokenIdHexChars + 1);
  expect_denied("spd_" + b->info.id + "_" + secret_a, "b's id, a's secret");
  expect_denied("spd_" + a->info.id + "_" + secret_b, "a's id, b's secret");
  // Garbage and near misses.
  for (const std::string& g :
       {std::string(), std::string("spd_"), std::string("spd__"), tok + "A", tok.substr(1),
        tok.substr(0, tok.size() - 1), "Bearer " + tok, " " + tok, tok + "\n",
        std::string(tok.size(), 'a'), std::string(tok.size(), '\0'), std::string(1 << 20, 'x'),
        "SPD_" + tok.substr(4)}) {
    expect_denied(g, "garbage of " + std::to_string(g.size()) + " bytes");
  }
  std::string upper = tok;
  for (size_t i = 4; i < 4 + kTokenIdHexChars; ++i) upper[i] = static_cast<char>(toupper(upper[i]));
  if (upper != tok) expect_denied(upper, "id in upper case");
  std::string with_nul = tok;
  with_nul[20] = '\0';
  expect_denied(with_nul, "NUL inside");

  // Still valid after all that; then revoked, never again (also after a reopen).
  EXPECT_TRUE(s->Authenticate(tok).ok());
  ASSERT_TRUE(s->RevokeToken(a->info.id).ok());
  EXPECT_EQ(s->RevokeToken(a->info.id).code(), StatusCode::kNotFound);
  expect_denied(tok, "revoked");
  s.reset();
  s = OpenOk(dir.path());
  expect_denied(tok, "revoked, after reopen");
  EXPECT_TRUE(s->Authenticate(b->token).ok());
}

// The schema makes these rows impossible; a hand edit (or a bug) could still make them, and
// Authenticate must not grant access on them. A damaged intent is kDataLoss naming the path.
TEST(StateStore, InconsistentRowsAreRefused) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s->PutTenant({"acme"}).ok());
  auto t = s->CreateToken(Role::kTenant, "acme", "");
  auto a = s->CreateToken(Role::kAdmin, "", "");
  ASSERT_TRUE(t.ok() && a.ok());
  ASSERT_TRUE(s->Authenticate(t->token).ok());
  RawExec(dir.db(), "PRAGMA foreign_keys=OFF; DELETE FROM tenants WHERE name = 'acme'");
  EXPECT_EQ(s->Authenticate(t->token).status().code(), StatusCode::kPermissionDenied);
  RawExec(dir.db(),
          "PRAGMA ignore_check_constraints=ON; UPDATE tokens SET tenant = 'beta' "
          "WHERE id = '" +
              a->info.id + "'");
  ASSERT_TRUE(s->PutTenant({"beta"}).ok());
  EXPECT_EQ(s->Authenticate(a->token).status().code(), StatusCode::kPermissionDenied);

  ASSERT_TRUE(s->PutVolumeMeta({"v1", "", "", FullIntent()}).ok());
  RawExec(dir.db(), "UPDATE volume_meta SET intent = '{\"weight\":\"heavy\"}'");
  Status st = s->GetVolumeMeta("v1").status();
  EXPECT_EQ(st.code(), StatusCode::kDataLoss) << st.ToString();
  EXPECT_TRUE(Contains(st.message(), dir.db()) && Contains(st.message(), "weight"))
      << st.ToString();
  RawExec(dir.db(), "UPDATE volume_meta SET intent = '{\"colour\":\"blue\"}'");
  EXPECT_EQ(s->ListVolumeMeta().status().code(), StatusCode::kDataLoss);
  RawExec(dir.db(), "UPDATE volume_meta SET intent = 'not json'");
  EXPECT_EQ(s->GetVolumeMeta("v1").status().code(), StatusCode::kDataLoss);
}

TEST(StateStore, TheFilesHoldTheHashButNoSecret) {
  TempDir dir;
  std::vector<std::string> tokens;
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s->PutTenant({"acme"}).ok());
  for (int i = 0; i < 8; ++i) {
    auto t = i % 2 ? s->CreateToken(Role::kAdmin, "", "t" + std::to_string(i))
                   : s->CreateToken(Role::kTenant, "acme", "");
    ASSERT_TRUE(t.ok());
    tokens.push_back(t->token);
  }
  auto check = [&](const std::string& bytes, const char* when) {
    ASSERT_GT(bytes.size(), 0u) << when;
    for (const std::string& tok : tokens) {
      const std::string secret = tok.substr(4 + kTokenIdHexChars + 1);
      EXPECT_FALSE(Contains(bytes, tok)) << when;
      EXPECT_FALSE(Contains(bytes, secret)) << when;
      EXPECT_FALSE(Contains(bytes, secret.substr(0, 16))) << when;
      // Proof that the search looks at the right bytes: the hash is there.
      unsigned char md[32];
      unsigned int n = 0;
      ASSERT_EQ(EVP_Digest(tok.data(), tok.size(), md, &n, EVP_sha256(), nullptr), 1);
      EXPECT_TRUE(Contains(bytes, std::string_view(reinterpret_cast<char*>(md), 32))) << when;
    }
  };
  // While open, the rows are in the WAL; after close, checkpointed into the database file.
  check(ReadBytes(dir.db()) + ReadBytes(dir.db() + "-wal"), "open");
  s.reset();
  EXPECT_FALSE(std::filesystem::exists(dir.db() + "-wal"));
  check(ReadBytes(dir.db()), "closed");
}

TEST(StateStore, ConcurrentCallersSeeConsistentState) {
  TempDir dir;
  auto s = OpenOk(dir.path());
  ASSERT_TRUE(s->PutStorageClass({"gold", FullIntent()}).ok());
  auto tok = s->CreateToken(Role::kOperator, "", "");
  ASSERT_TRUE(tok.ok());
  constexpr int kWriters = 4;
  constexpr int kPerWriter = 60;
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < kPerWriter; ++i) {
        const std::string n = "w" + std::to_string(w) + "-" + std::to_string(i);
        if (!s->PutTenant({n}).ok()) ++failures;
        if (!s->PutVolumeMeta({"vol-" + n, n, "gold", {}}).ok()) ++failures;
        if (!s->PutUidRole({static_cast<uint32_t>(w * 1000 + i), Role::kTenant, n}).ok())
          ++failures;
        if (!s->GetVolumeMeta("vol-" + n).ok()) ++failures;
      }
    });
  }
  std::thread reader([&] {
    size_t last = 0;
    while (!stop.load()) {
      auto vols = s->ListVolumeMeta();
      auto tenants = s->ListTenants();
      if (!vols.ok() || !tenants.ok()) ++failures;
      // Every volume's tenant exists in a listing taken after it.
      else if (vols->size() < last || tenants->size() < vols->size())
        ++failures;
      else
        last = vols->size();
      if (!s->Authenticate(tok->token).ok()) ++failures;
    }
  });
  for (auto& t : threads) t.join();
  stop = true;
  reader.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(s->ListTenants()->size(), size_t{kWriters * kPerWriter});
  EXPECT_EQ(s->ListVolumeMeta()->size(), size_t{kWriters * kPerWriter});
  EXPECT_EQ(s->ListUidRoles()->size(), size_t{kWriters * kPerWriter});
  s.reset();
  s = OpenOk(dir.path());
  EXPECT_EQ(s->ListVolumeMeta()->size(), size_t{kWriters * kPerWriter});
}

}  // namespace
}  // namespace spd::state
