// The Redfish service without HTTP: protocol rules (DSP0266), sessions and their limits,
// accounts, and that sensor values come from the health cache.
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "health/health_cache.h"
#include "redfish/redfish_auth.h"
#include "redfish/redfish_resources.h"
#include "redfish/redfish_service.h"

namespace spd::redfish {
namespace {

constexpr uint64_t kSec = 1'000'000'000;
constexpr uint32_t kIter = 1000;

class RedfishTest : public ::testing::Test {
 protected:
  void SetUp() override {
    health::CacheOptions co;
    co.path = "/tmp/spd-redfish-test." + std::to_string(getpid());
    co.capacity = 128;
    writer_ = std::move(health::HealthCacheWriter::Create(co)).value();
    health::SensorIdentity id;
    id.name = "hwmon/spdcpu/Package_id_0";
    id.channel = "temp1";
    id.kind = health::SensorKind::kTemp;
    id.unit = health::SensorUnit::kMilliCelsius;
    id.period_ns = kSec;
    index_ = writer_->AddSensor(id).value();
    SetTemp(42500, health::SensorStatus::kOk);
    ASSERT_EQ(spdr_cache_open_path(co.path.c_str(), &cache_), SPDR_OK);
    auto accounts = ParseAccounts(MakeAccountLine("admin", Role::kAdministrator, "s3cret", kIter) +
                                  "\n" + MakeAccountLine("viewer", Role::kReadOnly, "view", kIter));
    ASSERT_TRUE(accounts.ok()) << accounts.status().ToString();
    ServiceOptions so;
    so.sessions_max = 2;
    so.session_timeout_ns = 60 * kSec;
    so.uuid = "00000000-0000-4000-8000-000000000000";
    so.drives.push_back(DriveInfo{"/tmp/pool.img", 1 << 30, "", ""});
    service_ = std::make_unique<RedfishService>(so, std::move(*accounts), cache_);
  }
  void TearDown() override {
    service_.reset();
    spdr_cache_close(cache_);
  }
  void SetTemp(int64_t v, health::SensorStatus status) {
    health::SensorSample s;
    s.value = v;
    s.max = 80000;
    s.crit = 100000;
    s.threshold_mask = health::kHasMax | health::kHasCrit;
    s.status = static_cast<uint32_t>(status);
    s.updated_monotonic_ns = 1;
    s.update_count = 1;
    writer_->BeginRound();
    writer_->Write(index_, s);
    writer_->EndRound(1, 1);
  }
  HttpResponse Do(const std::string& method, const std::string& path,
                  std::map<std::string, std::string> headers = {}, std::string body = "",
                  uint64_t now = kSec) {
    HttpRequest r;
    r.method = method;
    r.path = path;
    r.headers = std::move(headers);
    r.body = std::move(body);
    return service_->Handle(r, now);
  }
  HttpResponse Get(const std::string& path, uint64_t now = kSec) {
    return Do("GET", path, {{"authorization", "Basic YWRtaW46czNjcmV0"}}, "", now);  // admin
  }
  HttpResponse GetQuery(const std::string& path, const std::string& key, const std::string& value) {
    HttpRequest r;
    r.method = "GET";
    r.path = path;
    r.headers["authorization"] = "Basic YWRtaW46czNjcmV0";  // admin
    r.query[key] = value;
    return service_->Handle(r, kSec);
  }
  static nlohmann::json J(const HttpResponse& r) { return nlohmann::json::parse(r.body); }

  std::unique_ptr<health::HealthCacheWriter> writer_;
  uint32_t index_ = 0;
  spdr_cache* cache_ = nullptr;
  std::unique_ptr<RedfishService> service_;
};

TEST_F(RedfishTest, ServiceRootIsPublicWithTheRequiredHeaders) {
  HttpResponse r = Do("GET", "/redfish/v1/");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("OData-Version"), "4.0");
  EXPECT_EQ(r.Header("Content-Type"), "application/json;charset=utf-8");
  EXPECT_FALSE(r.Header("ETag").empty());
  EXPECT_EQ(r.Header("Link"),
            "<http://redfish.dmtf.org/schemas/v1/ServiceRoot.v1_15_0.json>; rel=describedby");
  nlohmann::json j = J(r);
  EXPECT_EQ(j["@odata.id"], "/redfish/v1");
  EXPECT_EQ(j["Links"]["Sessions"]["@odata.id"], "/redfish/v1/SessionService/Sessions");
  EXPECT_EQ(Do("GET", "/redfish").status, 200);
  EXPECT_EQ(Do("GET", "/redfish/v1/$metadata").Header("Content-Type"), "application/xml");
  EXPECT_EQ(Do("GET", "/redfish/v1/odata").status, 200);
}

TEST_F(RedfishTest, EverythingElseNeedsCredentials) {
  HttpResponse r = Do("GET", "/redfish/v1/Chassis");
  EXPECT_EQ(r.status, 401);
  EXPECT_EQ(r.Header("WWW-Authenticate"), "Basic realm=\"spd2\"");
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis", {{"authorization", "Basic YWRtaW46d3Jvbmc="}}).status,
            401);                                           // admin:wrong
  EXPECT_EQ(Do("GET", "/redfish/v1/Nowhere").status, 401);  // no hint of what exists
  EXPECT_EQ(Get("/redfish/v1/Chassis").status, 200);
  EXPECT_EQ(Get("/redfish/v1/Nowhere").status, 404);
}

TEST_F(RedfishTest, MethodNotAllowedNamesTheAllowedOnes) {
  HttpResponse r = Do("POST", "/redfish/v1/Chassis", {{"authorization", "Basic YWRtaW46czNjcmV0"}});
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.Header("Allow"), "GET, HEAD");
  EXPECT_EQ(Do("DELETE", "/redfish/v1/").status, 405);
  EXPECT_EQ(Do("PATCH", "/redfish/v1/SessionService/Sessions",
               {{"authorization", "Basic YWRtaW46czNjcmV0"}})
                .Header("Allow"),
            "GET, HEAD, POST");
}

TEST_F(RedfishTest, OnlyODataVersion40IsAccepted) {
  EXPECT_EQ(Do("GET", "/redfish/v1/", {{"odata-version", "4.0"}}).status, 200);
  EXPECT_EQ(Do("GET", "/redfish/v1/", {{"odata-version", "4.1"}}).status, 412);
}

TEST_F(RedfishTest, IfNoneMatchWithTheETagIs304) {
  HttpResponse r = Get("/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0");
  ASSERT_EQ(r.status, 200);
  const std::string etag = r.Header("ETag");
  HttpResponse again = Do("GET", "/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0",
                          {{"authorization", "Basic YWRtaW46czNjcmV0"}, {"if-none-match", etag}});
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  SetTemp(43000, health::SensorStatus::kOk);  // a new value is a new representation
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0",
               {{"authorization", "Basic YWRtaW46czNjcmV0"}, {"if-none-match", etag}})
                .status,
            200);
}

TEST_F(RedfishTest, SensorFollowsTheCache) {
  nlohmann::json j = J(Get("/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0"));
  EXPECT_DOUBLE_EQ(j["Reading"].get<double>(), 42.5);
  EXPECT_EQ(j["ReadingUnits"], "Cel");
  EXPECT_EQ(j["ReadingType"], "Temperature");
  EXPECT_EQ(j["Status"]["Health"], "OK");
  EXPECT_DOUBLE_EQ(j["Thresholds"]["UpperCaution"]["Reading"].get<double>(), 80.0);
  EXPECT_DOUBLE_EQ(j["Thresholds"]["UpperCritical"]["Reading"].get<double>(), 100.0);
  SetTemp(101000, health::SensorStatus::kCritical);
  j = J(Get("/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0"));
  EXPECT_DOUBLE_EQ(j["Reading"].get<double>(), 101.0);
  EXPECT_EQ(j["Status"]["Health"], "Critical");
  EXPECT_EQ(J(Get("/redfish/v1/Chassis/1"))["Status"]["HealthRollup"], "Critical");
  nlohmann::json t = J(Get("/redfish/v1/Chassis/1/ThermalSubsystem/ThermalMetrics"));
  EXPECT_DOUBLE_EQ(t["TemperatureReadingsCelsius"][0]["Reading"].get<double>(), 101.0);
  EXPECT_EQ(J(Get("/redfish/v1/Chassis/1/Sensors"))["Members@odata.count"], 1);
  EXPECT_EQ(Get("/redfish/v1/Chassis/1/PowerSubsystem").status, 404);  // no power data
  EXPECT_EQ(J(Get("/redfish/v1/Systems/1/Storage/1/Drives/0"))["CapacityBytes"], 1 << 30);
}

TEST_F(RedfishTest, SessionCreateUseDelete) {
  HttpResponse r = Do("POST", "/redfish/v1/SessionService/Sessions", {},
                      R"({"UserName": "viewer", "Password": "view"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string token = r.Header("X-Auth-Token");
  EXPECT_EQ(token.size(), kTokenBytes * 2);
  const std::string location = r.Header("Location");
  EXPECT_EQ(location, "/redfish/v1/SessionService/Sessions/" + J(r)["Id"].get<std::string>());
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis", {{"x-auth-token", token}}).status, 200);
  EXPECT_EQ(Do("DELETE", location, {{"x-auth-token", token}}).status, 200);
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis", {{"x-auth-token", token}}).status, 401);
  EXPECT_EQ(Do("POST", "/redfish/v1/SessionService/Sessions", {},
               R"({"UserName": "viewer", "Password": "nope"})")
                .status,
            401);
}

TEST_F(RedfishTest, APostToMembersIsAPostToTheCollection) {
  HttpResponse r = Do("POST", "/redfish/v1/SessionService/Sessions/Members", {},
                      R"({"UserName": "viewer", "Password": "view"})");
  EXPECT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Do("GET", "/redfish/v1/SessionService/Sessions/Members",
               {{"authorization", "Basic YWRtaW46czNjcmV0"}})
                .Header("Allow"),
            "POST");
}

TEST_F(RedfishTest, ALabelThatIsNotUtf8IsReplaced) {
  health::SensorIdentity id;
  id.name = "hwmon/odd/temp1";
  id.label = "bad \xff label";
  id.kind = health::SensorKind::kTemp;
  id.unit = health::SensorUnit::kMilliCelsius;
  id.period_ns = kSec;
  ASSERT_TRUE(writer_->AddSensor(id).ok());
  HttpResponse r = Get("/redfish/v1/Chassis/1/Sensors/hwmon_odd_temp1");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(J(r)["Description"], "bad \xef\xbf\xbd label");
}

TEST_F(RedfishTest, SessionsMaxIsEnforced) {
  const std::string body = R"({"UserName": "admin", "Password": "s3cret"})";
  EXPECT_EQ(Do("POST", "/redfish/v1/SessionService/Sessions", {}, body).status, 201);
  EXPECT_EQ(Do("POST", "/redfish/v1/SessionService/Sessions", {}, body).status, 201);
  HttpResponse r = Do("POST", "/redfish/v1/SessionService/Sessions", {}, body);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(service_->sessions().List(kSec).size(), 2u);
}

TEST_F(RedfishTest, SessionsEndAfterTheirTimeoutSinceLastUse) {
  HttpResponse r = Do("POST", "/redfish/v1/SessionService/Sessions", {},
                      R"({"UserName": "admin", "Password": "s3cret"})", kSec);
  const std::string token = r.Header("X-Auth-Token");
  // Used at 50 s: alive until 110 s.
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis", {{"x-auth-token", token}}, "", 50 * kSec).status, 200);
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis", {{"x-auth-token", token}}, "", 109 * kSec).status,
            200);
  EXPECT_EQ(Do("GET", "/redfish/v1/Chassis", {{"x-auth-token", token}}, "", 170 * kSec).status,
            401);
}

TEST_F(RedfishTest, TooLargeARequestIs413) {
  HttpRequest req;
  req.method = "POST";
  req.path = "/redfish/v1/SessionService/Sessions";
  req.body_too_large = true;
  EXPECT_EQ(service_->Handle(req, kSec).status, 413);
}

TEST_F(RedfishTest, UnsupportedQueryParametersAre501) {
  HttpRequest req;
  req.method = "GET";
  req.path = "/redfish/v1/Chassis";
  req.headers["authorization"] = "Basic YWRtaW46czNjcmV0";
  req.query["$top"] = "2";
  EXPECT_EQ(service_->Handle(req, kSec).status, 501);
  req.query.clear();
  req.query["excerpt"] = "";
  EXPECT_EQ(service_->Handle(req, kSec).status, 501);
}

// Seven more temperature sensors beside the fixture's (hwmon/more/temp1..7).
void AddMoreSensorsTo(health::HealthCacheWriter* writer) {
  for (int i = 1; i < 8; ++i) {
    health::SensorIdentity id;
    id.name = "hwmon/more/temp" + std::to_string(i);
    id.kind = health::SensorKind::kTemp;
    id.unit = health::SensorUnit::kMilliCelsius;
    id.period_ns = kSec;
    ASSERT_TRUE(writer->AddSensor(id).ok());
  }
}

// $expand (DSP0266): the Sensors collection with every Sensor in line, from one snapshot of the
// cache; the three kinds and $levels; bad values are 400; and a public resource expands into
// protected ones only for an authenticated client.
TEST_F(RedfishTest, ExpandPutsTheSensorsInLine) {
  AddMoreSensorsTo(writer_.get());
  const nlohmann::json plain = J(Get("/redfish/v1/Chassis/1/Sensors"));
  HttpResponse r = GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", ".");
  ASSERT_EQ(r.status, 200) << r.body;
  nlohmann::json j = J(r);
  ASSERT_EQ(j["Members@odata.count"], 8);
  ASSERT_EQ(j["Members"].size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    const nlohmann::json& m = j["Members"][i];
    EXPECT_EQ(m["@odata.id"], plain["Members"][i]["@odata.id"]);
    EXPECT_EQ(m["@odata.type"], "#Sensor.v1_7_0.Sensor");
    EXPECT_EQ(J(Get(m["@odata.id"].get<std::string>())), m);  // as its own GET shows it
  }
  EXPECT_DOUBLE_EQ(j["Members"][0]["Reading"].get<double>(), 42.5);
  EXPECT_EQ(j, J(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", "*")));
  EXPECT_EQ(j, J(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", ".($levels=3)")));
  // "~" expands only what is under Links: a collection has none.
  EXPECT_EQ(J(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", "~")), plain);

  nlohmann::json c = J(GetQuery("/redfish/v1/Chassis/1", "$expand", "."));
  EXPECT_EQ(c["Sensors"]["Members@odata.count"], 8);
  EXPECT_EQ(c["Sensors"]["Members"][0].size(), 1u);  // level 2 is not expanded
  EXPECT_EQ(c["Links"]["ComputerSystems"][0].size(), 1u);
  c = J(GetQuery("/redfish/v1/Chassis/1", "$expand", "~"));
  EXPECT_EQ(c["Links"]["ComputerSystems"][0]["SystemType"], "Physical");
  EXPECT_EQ(c["Sensors"].size(), 1u);
  c = J(GetQuery("/redfish/v1/Chassis/1", "$expand", "*($levels=2)"));
  EXPECT_EQ(c["Sensors"]["Members"][0]["ReadingUnits"], "Cel");
  EXPECT_EQ(c["Links"]["ComputerSystems"][0]["Links"]["Chassis"][0]["ChassisType"], "RackMount");

  for (const char* bad : {"", "x", "Members", ".($levels=0)", ".($levels=7)", ".($levels=x)",
                          ".(levels=2)", ".($levels=2", "..", "*($levels=)"}) {
    EXPECT_EQ(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", bad).status, 400) << bad;
  }

  // The service root is public; what it links to is not.
  HttpRequest req;
  req.method = "GET";
  req.path = "/redfish/v1";
  req.query["$expand"] = "*";
  nlohmann::json root = J(service_->Handle(req, kSec));
  EXPECT_EQ(root["Chassis"].size(), 1u);
  EXPECT_EQ(root["ProtocolFeaturesSupported"]["ExpandQuery"]["NoLinks"], true);
  EXPECT_EQ(root["ProtocolFeaturesSupported"]["ExpandQuery"]["MaxLevels"], kExpandLevelsMax);
  EXPECT_EQ(J(GetQuery("/redfish/v1", "$expand", "*"))["Chassis"]["Members@odata.count"], 1);
}

// Past its limits (resources put in line, bytes of reply) $expand answers 507
// InsufficientStorage instead of building the reply; within them the same request is 200.
TEST_F(RedfishTest, ExpandPastItsLimitsIs507) {
  AddMoreSensorsTo(writer_.get());
  auto with_limits = [&](size_t resources, size_t bytes) {
    ServiceOptions so;
    so.expand_resources_max = resources;
    so.expand_bytes_max = bytes;
    service_ = std::make_unique<RedfishService>(
        so, ParseAccounts(MakeAccountLine("admin", Role::kAdministrator, "s3cret", kIter)).value(),
        cache_);
  };
  with_limits(8, kExpandBytesMax);  // the 8 Sensors fit
  EXPECT_EQ(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", ".").status, 200);
  with_limits(7, kExpandBytesMax);
  HttpResponse r = GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", ".");
  EXPECT_EQ(r.status, 507);
  EXPECT_EQ(J(r)["error"]["code"], "Base.1.16.InsufficientStorage");
  with_limits(kExpandResourcesMax, 2000);  // 8 Sensors are ~3.5 KB
  EXPECT_EQ(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", ".").status, 507);
  EXPECT_EQ(Get("/redfish/v1/Chassis/1/Sensors").status, 200);  // the limit is $expand's only
}

TEST_F(RedfishTest, AccountsAndRolesAreReadOnly) {
  EXPECT_EQ(J(Get("/redfish/v1/AccountService/Accounts"))["Members@odata.count"], 2);
  nlohmann::json a = J(Get("/redfish/v1/AccountService/Accounts/viewer"));
  EXPECT_EQ(a["RoleId"], "ReadOnly");
  EXPECT_TRUE(a["Password"].is_null());
  EXPECT_EQ(J(Get("/redfish/v1/AccountService/Roles"))["Members@odata.count"], 3);
  EXPECT_EQ(Get("/redfish/v1/AccountService/Roles/Operator").status, 200);
}

// The ETag follows every byte of the body: each single-byte change of a Sensor-sized body, at
// every position and in the tail past the last whole 8 bytes, gives another tag.
TEST(RedfishETag, EveryByteCounts) {
  const std::string body(437, 'x');
  const std::string tag = ETagOf(body);
  EXPECT_EQ(tag.size(), 18u);
  EXPECT_EQ(tag, ETagOf(body));
  EXPECT_NE(tag, ETagOf(body + "x"));
  EXPECT_NE(tag, ETagOf(body.substr(1)));
  for (size_t i = 0; i < body.size(); ++i) {
    std::string b = body;
    b[i] = 'y';
    EXPECT_NE(ETagOf(b), tag) << i;
  }
}

TEST(RedfishAccounts, BadLinesAreRefused) {
  EXPECT_FALSE(ParseAccounts("admin:Administrator").ok());
  EXPECT_FALSE(ParseAccounts("admin:Root:pbkdf2-sha256$1000$0011223344556677$00").ok());
  EXPECT_FALSE(
      ParseAccounts("admin:ReadOnly:pbkdf2-sha256$10$0011223344556677$" + std::string(64, '0'))
          .ok());  // too few iterations
  EXPECT_TRUE(ParseAccounts("# comment\n\nadmin:ReadOnly:pbkdf2-sha256$1000$0011223344556677$" +
                            std::string(64, '0'))
                  .ok());
}

TEST(RedfishAccounts, VerifyChecksThePassword) {
  Accounts a(ParseAccounts(MakeAccountLine("u", Role::kOperator, "pw", kIter)).value());
  EXPECT_FALSE(a.Verify("u", "wrong").has_value());
  EXPECT_TRUE(a.Verify("u", "pw").has_value());
  EXPECT_TRUE(a.Verify("u", "pw").has_value());  // remembered
  EXPECT_FALSE(a.Verify("u", "pw2").has_value());
  EXPECT_FALSE(a.Verify("nobody", "pw").has_value());
}

}  // namespace
}  // namespace spd::redfish

namespace spd::redfish {
namespace {

// Not a limit, a figure: what one Sensor GET costs inside the service with 96 sensors (the
// HTTPS server adds its own). Printed for bench/health's readers.
TEST_F(RedfishTest, SensorGetCostWith96Sensors) {
  for (int i = 1; i < 96; ++i) {
    health::SensorIdentity id;
    id.name = "hwmon/bench" + std::to_string(i / 16) + "/temp" + std::to_string(i % 16 + 1);
    id.kind = health::SensorKind::kTemp;
    id.unit = health::SensorUnit::kMilliCelsius;
    id.period_ns = kSec;
    ASSERT_TRUE(writer_->AddSensor(id).ok());
  }
  constexpr int kRounds = 2000;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kRounds; ++i)
    ASSERT_EQ(Get("/redfish/v1/Chassis/1/Sensors/hwmon_bench3_temp9").status, 200);
  const double us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
      kRounds;
  std::printf("one Sensor GET in the service: %.1f us\n", us);
  constexpr int kExpandRounds = 200;
  const auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < kExpandRounds; ++i)
    ASSERT_EQ(GetQuery("/redfish/v1/Chassis/1/Sensors", "$expand", ".").status, 200);
  const double expand_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t1).count() /
      kExpandRounds;
  std::printf("Sensors?$expand=. (96 in line) in the service: %.1f us\n", expand_us);
}

}  // namespace
}  // namespace spd::redfish

namespace spd::redfish {
namespace {

// Several server threads at once (as libmicrohttpd's pool runs them) while the collector writes
// rounds: sessions come and go, sensors are read one by one and all at once. ThreadSanitizer
// (build-tsan) checks the sharing; here, every reply must be well-formed.
TEST_F(RedfishTest, ConcurrentRequestsWhileTheCacheIsWritten) {
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int v = 0; !stop.load(); ++v) SetTemp(40000 + v % 1000, health::SensorStatus::kOk);
  });
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        const char* paths[] = {"/redfish/v1/Chassis/1/Sensors/hwmon_spdcpu_Package_id_0",
                               "/redfish/v1/Chassis/1", "/redfish/v1/Chassis/1/Sensors"};
        if (Get(paths[(i + t) % 3]).status != 200) ++bad;
        if (t % 2 == 0 && i % 10 == 0) {
          HttpResponse r = Do("POST", "/redfish/v1/SessionService/Sessions", {},
                              R"({"UserName": "admin", "Password": "s3cret"})");
          if (r.status == 201) {
            Do("DELETE", r.Header("Location"), {{"x-auth-token", r.Header("X-Auth-Token")}});
          } else if (r.status != 503) {
            ++bad;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  writer.join();
  EXPECT_EQ(bad.load(), 0);
}

}  // namespace
}  // namespace spd::redfish
