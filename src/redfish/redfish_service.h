// The Redfish service (DMTF DSP0266, Redfish 1.x): every resource and every protocol rule, as
// a function from a request to a response, with no socket in sight. redfish_server.h puts it
// behind HTTPS. docs/redfish.md lists the resources.
//
// Sensor values come from the host-health cache through libspdr (a snapshot per request): a
// GET never touches sysfs, and costs the collector nothing.
//
// Thread-safety: Handle may run on any number of threads at once.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "redfish/redfish_auth.h"
#include "spd/libspdr.h"

namespace spd::redfish {

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // without the query
  std::map<std::string, std::string> query;
  std::map<std::string, std::string> headers;  // keys in lower case
  std::string body;
  bool body_too_large = false;  // the server stopped reading at its request_bytes_max
  std::string Header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct HttpResponse {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string etag;  // of body when already known (a cached Sensor body); else Finish hashes
  std::string Header(const std::string& name) const;  // "" when absent (exact name)
};

// A drive of Systems/1/Storage/1: the pool's device, with what is known about it.
struct DriveInfo {
  std::string path;  // the pool's file or block device
  uint64_t capacity_bytes = 0;
  std::string nvme_serial;  // set when it is an NVMe namespace (its SMART is in the cache)
  std::string model;
};

// $expand (DSP0266 "Query parameters"): "*", "." or "~", with ($levels=N) up to
// kExpandLevelsMax. One reply puts at most kExpandResourcesMax resources in line and holds at
// most kExpandBytesMax bytes; past either the answer is 507 InsufficientStorage.
inline constexpr uint32_t kExpandLevelsMax = 6;
inline constexpr size_t kExpandResourcesMax = 10'000;
inline constexpr size_t kExpandBytesMax = 8 << 20;

struct ServiceOptions {
  uint64_t session_timeout_ns = 1'800'000'000'000;
  uint32_t sessions_max = 64;
  std::string uuid;      // ServiceRoot.UUID; stable across restarts (from the data directory)
  std::string hostname;  // ComputerSystem.HostName
  std::vector<DriveInfo> drives;
  bool test_break_odata_version = false;              // test only: no OData-Version header
  size_t expand_resources_max = kExpandResourcesMax;  // smaller in tests
  size_t expand_bytes_max = kExpandBytesMax;
};

class RedfishService {
 public:
  // cache: the health cache, mapped by the caller, who keeps it open longer than the service.
  RedfishService(ServiceOptions options, std::vector<Account> accounts, const spdr_cache* cache);
  ~RedfishService();
  HttpResponse Handle(const HttpRequest& req, uint64_t now_ns);

  SessionStore& sessions() { return sessions_; }

  // One sensor of the cache as a Redfish Sensor (what redfish_resources.cc builds from).
  struct SensorView {
    std::string id;  // the URI segment: the stable name with '/' made '_'
    spdr_sensor_info info;
    spdr_reading reading;
  };
  struct Auth {
    bool ok = false;
    std::string user;
    Role role = Role::kReadOnly;
    std::string session_id;  // when the request came with a session token
  };

 private:
  struct RequestCtx;  // one request's sensor snapshot and $expand budget (redfish_service.cc)
  struct Target;      // what a URI names (redfish_service.cc)
  struct ExpandQuery;
  HttpResponse Route(const HttpRequest& req, const Auth& auth, uint64_t now_ns);
  Target Find(const HttpRequest& req, const std::vector<std::string>& seg, const Auth& auth,
              uint64_t now_ns, RequestCtx& ctx);
  // Puts in line the resources that j's references name, levels deep; false past the limits.
  bool Expand(nlohmann::json& j, const ExpandQuery& q, uint32_t levels, bool in_links,
              const Auth& auth, uint64_t now_ns, RequestCtx& ctx);
  Auth Authenticate(const HttpRequest& req, uint64_t now_ns);
  HttpResponse PostSession(const HttpRequest& req, uint64_t now_ns);
  struct SensorIndex {
    std::vector<std::string> ids;  // by cache index
    std::unordered_map<std::string, uint32_t> by_id;
    std::vector<spdr_sensor*> handles;  // closed with the index
    SensorIndex() = default;
    SensorIndex(const SensorIndex&) = delete;
    SensorIndex& operator=(const SensorIndex&) = delete;
    ~SensorIndex();
  };
  std::shared_ptr<const SensorIndex> Index() const;
  // Every sensor, one snapshot (by cache index, as *index_out's ids).
  std::vector<SensorView> Sensors(std::shared_ptr<const SensorIndex>* index_out = nullptr) const;
  // The sensor of this id, read from the cache; *index its cache index.
  std::optional<SensorView> OneSensor(const std::string& id, uint32_t* index) const;
  // A Sensor's 200 reply: the body (and ETag) last built for this sensor when its reading is
  // the same, else built now and kept. A GET of one Sensor is then a cached read and a copy.
  HttpResponse SensorResponse(uint32_t index, const SensorView& s) const;
  // The Sensors collection with every member in line ($expand "." or "*"), made of the members'
  // SensorResponse bodies, spliced into the collection's.
  HttpResponse ExpandedSensors(RequestCtx& ctx) const;
  void Finish(const HttpRequest& req, HttpResponse* resp) const;

  const ServiceOptions options_;
  Accounts accounts_;
  SessionStore sessions_;
  const spdr_cache* cache_;
  mutable std::mutex index_mu_;
  mutable std::shared_ptr<const SensorIndex> index_;  // guarded by index_mu_
  struct SensorBody {
    bool valid = false;
    spdr_reading reading{};  // the reading body shows
    std::string body, etag;
  };
  mutable std::mutex bodies_mu_;
  mutable std::vector<SensorBody> bodies_;  // by cache index; guarded by bodies_mu_
};

// A Redfish error body (DSP0266 "Error responses") with one Base message.
std::string ErrorBody(const std::string& message_id, const std::string& message);
// A 64-bit hash of body (multiplicative, 8 bytes a step; not cryptographic), as a quoted strong
// entity tag.
std::string ETagOf(const std::string& body);
// The sensors' URI segment: the stable name, '/' and other characters outside
// [A-Za-z0-9_.-] made '_'.
std::string SensorId(const std::string& stable_name);

}  // namespace spd::redfish
