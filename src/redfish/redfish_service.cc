#include "redfish/redfish_service.h"

#include <openssl/evp.h>
#include <strings.h>

#include <cstdio>
#include <functional>

#include "common/counters.h"
#include "redfish/redfish_resources.h"

namespace spd::redfish {
namespace {

Counter requests_total("spd_redfish_requests_total", "Redfish requests answered.");
Counter auth_failures_total("spd_redfish_auth_failures_total",
                            "Redfish requests refused 401: no, wrong or expired credentials.");
Counter client_errors_total("spd_redfish_client_errors_total",
                            "Redfish requests answered with a 4xx status other than 401 and 304.");
Counter server_errors_total("spd_redfish_server_errors_total",
                            "Redfish requests answered with a 5xx status.");
Counter cache_read_errors_total(
    "spd_redfish_cache_read_errors_total",
    "Redfish reads of the health cache that failed (no sensors shown).");

constexpr char kAllowGet[] = "GET, HEAD";
constexpr char kAllowSessions[] = "GET, HEAD, POST";
constexpr char kAllowSession[] = "GET, HEAD, DELETE";

std::vector<std::string> Segments(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 1;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

HttpResponse JsonResponse(int status, const Json& j) {
  HttpResponse r;
  r.status = status;
  // Labels come from sysfs: bytes that are not UTF-8 become U+FFFD instead of an exception.
  r.body = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  r.headers.emplace_back("Content-Type", "application/json;charset=utf-8");
  return r;
}

HttpResponse Error(int status, const std::string& id, const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.body = ErrorBody(id, message);
  r.headers.emplace_back("Content-Type", "application/json;charset=utf-8");
  return r;
}

std::string Base64Decode(const std::string& in) {
  if (in.empty() || in.size() % 4 != 0) return "";
  std::string out(in.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), int(in.size()));
  if (n < 0) return "";
  size_t len = size_t(n);
  if (in.size() >= 1 && in[in.size() - 1] == '=') --len;
  if (in.size() >= 2 && in[in.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

// What a route allows, and whether it needs no authentication.
struct Target {
  bool found = false;
  bool is_public = false;
  const char* allow = kAllowGet;
};

}  // namespace

std::string HttpResponse::Header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

std::string ErrorBody(const std::string& message_id, const std::string& message) {
  Json info = {{"@odata.type", "#Message.v1_1_1.Message"},
               {"MessageId", "Base.1.16." + message_id},
               {"Message", message},
               {"Severity", "Warning"},
               {"MessageSeverity", "Warning"},
               {"Resolution", "See the message."}};
  return Json{{"error",
               {{"code", "Base.1.16." + message_id},
                {"message", message},
                {"@Message.ExtendedInfo", Json::array({info})}}}}
      .dump();
}

std::string ETagOf(const std::string& body) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : body) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "\"%016llx\"", static_cast<unsigned long long>(h));
  return buf;
}

std::string SensorId(const std::string& stable_name) {
  std::string id = stable_name;
  for (char& c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) c = '_';
  }
  return id;
}

RedfishService::RedfishService(ServiceOptions options, std::vector<Account> accounts,
                               const spdr_cache* cache)
    : options_(std::move(options)),
      accounts_(std::move(accounts)),
      sessions_(options_.sessions_max, options_.session_timeout_ns),
      cache_(cache) {}

RedfishService::~RedfishService() = default;

RedfishService::SensorIndex::~SensorIndex() {
  for (spdr_sensor* h : handles) spdr_sensor_close(h);
}

// Ids, and a handle per sensor for one-sensor reads; rebuilt only when sensors were added (the
// count only grows), so a request does no per-sensor string work.
std::shared_ptr<const RedfishService::SensorIndex> RedfishService::Index() const {
  const uint32_t count = cache_ == nullptr ? 0 : spdr_sensor_count(cache_);
  std::lock_guard<std::mutex> lock(index_mu_);
  if (index_ && index_->ids.size() == count) return index_;
  auto idx = std::make_shared<SensorIndex>();
  for (uint32_t i = 0; i < count; ++i) {
    spdr_sensor_info info;
    spdr_sensor* h = nullptr;
    if (spdr_sensor_info_at(cache_, i, &info) != SPDR_OK ||
        spdr_sensor_open(const_cast<spdr_cache*>(cache_), info.name, &h) != SPDR_OK) {
      cache_read_errors_total.Add();
      return std::make_shared<SensorIndex>();
    }
    std::string id = SensorId(info.name);
    // Two names that sanitize alike (a/b_c, a_b/c) keep distinct ids.
    if (idx->by_id.count(id) != 0) id += "_" + std::to_string(i);
    idx->by_id.emplace(id, i);
    idx->ids.push_back(std::move(id));
    idx->handles.push_back(h);
  }
  index_ = idx;
  return idx;
}

std::vector<RedfishService::SensorView> RedfishService::Sensors() const {
  std::vector<SensorView> out;
  const std::shared_ptr<const SensorIndex> idx = Index();
  std::vector<spdr_reading> readings(idx->ids.size());
  uint32_t count = 0;
  if (readings.empty()) return out;
  if (spdr_snapshot(cache_, readings.data(), uint32_t(readings.size()), &count, nullptr) !=
      SPDR_OK) {
    cache_read_errors_total.Add();  // includes sensors added since Index (retried next request)
    return out;
  }
  out.resize(readings.size());
  for (size_t i = 0; i < out.size(); ++i) {
    spdr_sensor_info_at(cache_, uint32_t(i), &out[i].info);
    out[i].id = idx->ids[i];
    out[i].reading = readings[i];
  }
  return out;
}

std::optional<RedfishService::SensorView> RedfishService::OneSensor(const std::string& id) const {
  const std::shared_ptr<const SensorIndex> idx = Index();
  auto it = idx->by_id.find(id);
  if (it == idx->by_id.end()) return std::nullopt;
  SensorView v;
  v.id = id;
  if (spdr_sensor_info_get(idx->handles[it->second], &v.info) != SPDR_OK ||
      spdr_sensor_read_cached(idx->handles[it->second], &v.reading, 0) != SPDR_OK) {
    cache_read_errors_total.Add();
    return std::nullopt;
  }
  return v;
}

RedfishService::Auth RedfishService::Authenticate(const HttpRequest& req, uint64_t now_ns) {
  Auth a;
  const std::string token = req.Header("x-auth-token");
  if (!token.empty()) {
    if (std::optional<Session> s = sessions_.Use(token, now_ns)) {
      a.ok = true;
      a.user = s->user;
      a.role = s->role;
      a.session_id = s->id;
    }
    return a;
  }
  const std::string authz = req.Header("authorization");
  if (authz.size() > 6 && strncasecmp(authz.c_str(), "basic ", 6) == 0) {
    const std::string creds = Base64Decode(authz.substr(6));
    const size_t colon = creds.find(':');
    if (colon != std::string::npos) {
      if (auto acct = accounts_.Verify(creds.substr(0, colon), creds.substr(colon + 1))) {
        a.ok = true;
        a.user = acct->user;
        a.role = acct->role;
      }
    }
  }
  return a;
}

HttpResponse RedfishService::PostSession(const HttpRequest& req, uint64_t now_ns) {
  Json body = Json::parse(req.body, nullptr, false);
  if (body.is_discarded() || !body.is_object())
    return Error(400, "MalformedJSON", "The request body is not a JSON object.");
  if (!body.contains("UserName") || !body["UserName"].is_string() || !body.contains("Password") ||
      !body["Password"].is_string())
    return Error(400, "PropertyMissing", "UserName and Password (strings) are required.");
  auto acct =
      accounts_.Verify(body["UserName"].get<std::string>(), body["Password"].get<std::string>());
  if (!acct) {
    auth_failures_total.Add();
    HttpResponse r = Error(401, "InsufficientPrivilege", "Invalid user name or password.");
    r.headers.emplace_back("WWW-Authenticate", "Basic realm=\"spd2\"");
    return r;
  }
  Result<Session> s = sessions_.Create(acct->user, acct->role, now_ns);
  if (!s.ok()) {
    HttpResponse r = Error(503, "ServiceTemporarilyUnavailable",
                           "Too many sessions are open; delete one or wait for one to expire.");
    r.headers.emplace_back("Retry-After", "30");
    return r;
  }
  HttpResponse r = JsonResponse(201, SessionJson(*s));
  r.headers.emplace_back("X-Auth-Token", s->token);
  r.headers.emplace_back("Location", "/redfish/v1/SessionService/Sessions/" + s->id);
  return r;
}

HttpResponse RedfishService::Handle(const HttpRequest& req, uint64_t now_ns) {
  requests_total.Add();
  HttpResponse resp;
  const std::string odata_version = req.Header("odata-version");
  if (!odata_version.empty() && odata_version != "4.0") {
    resp = Error(412, "HeaderInvalid",
                 "OData-Version " + odata_version + " is not supported; this service speaks 4.0.");
  } else if (req.body_too_large) {
    resp = Error(413, "PayloadTooLarge", "The request body is larger than the service accepts.");
  } else {
    Auth auth;
    const std::vector<std::string> seg = Segments(req.path);
    const bool is_public =
        seg.size() <= 2 || (seg.size() == 3 && (seg[2] == "$metadata" || seg[2] == "odata")) ||
        (req.method == "POST" && seg.size() >= 4 && seg.size() <= 5 && seg[2] == "SessionService" &&
         seg[3] == "Sessions" && (seg.size() == 4 || seg[4] == "Members"));
    if (!is_public) auth = Authenticate(req, now_ns);
    if (!is_public && !auth.ok) {
      auth_failures_total.Add();
      resp = Error(401, "InsufficientPrivilege",
                   "Authentication is required: HTTP Basic or an X-Auth-Token of a session.");
      resp.headers.emplace_back("WWW-Authenticate", "Basic realm=\"spd2\"");
    } else {
      resp = Route(req, auth, now_ns);
    }
  }
  Finish(req, &resp);
  if (resp.status >= 500) {
    server_errors_total.Add();
  } else if (resp.status >= 400 && resp.status != 401) {
    client_errors_total.Add();
  }
  return resp;
}

// Common headers; ETag, Link and the conditional GET for resources.
void RedfishService::Finish(const HttpRequest& req, HttpResponse* resp) const {
  if (!options_.test_break_odata_version) resp->headers.emplace_back("OData-Version", "4.0");
  resp->headers.emplace_back("Cache-Control", "no-cache");
  resp->headers.emplace_back("Strict-Transport-Security", "max-age=31536000");
  resp->headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (resp->status != 200 || (req.method != "GET" && req.method != "HEAD")) return;
  const std::string etag = ETagOf(resp->body);
  resp->headers.emplace_back("ETag", etag);
  if (resp->Header("Content-Type").rfind("application/json", 0) == 0 && !resp->body.empty()) {
    // The schema that describes the body, by its @odata.type.
    const size_t k = resp->body.find("\"@odata.type\":\"");
    if (k != std::string::npos) {
      const size_t start = k + 15, end = resp->body.find('"', start);
      resp->headers.emplace_back(
          "Link", "<" + SchemaUriOf(resp->body.substr(start, end - start)) + ">; rel=describedby");
    }
  }
  const std::string inm = req.Header("if-none-match");
  if (!inm.empty() && (inm == "*" || inm.find(etag) != std::string::npos)) {
    resp->status = 304;
    resp->body.clear();
  }
}

HttpResponse RedfishService::Route(const HttpRequest& req, const Auth& auth, uint64_t now_ns) {
  const std::vector<std::string> seg = Segments(req.path);
  const size_t n = seg.size();
  auto at = [&](size_t i, const char* s) { return n > i && seg[i] == s; };
  for (const auto& [k, v] : req.query) {
    if (!k.empty() && (k[0] == '$' || k == "only" || k == "excerpt"))
      return Error(501, "QueryNotSupported", "Query parameter " + k + " is not supported.");
  }
  Target t;
  std::function<HttpResponse()> get;
  const bool v1 = at(0, "redfish") && at(1, "v1");
  std::vector<RedfishService::SensorView> sensors;
  bool sensors_read = false;
  auto need_sensors = [&]() -> const std::vector<SensorView>& {
    if (!sensors_read) sensors = Sensors();
    sensors_read = true;
    return sensors;
  };
  if (n == 1 && at(0, "redfish")) {
    t = {true, true};
    get = [] { return JsonResponse(200, Json{{"v1", "/redfish/v1/"}}); };
  } else if (v1 && n == 2) {
    t = {true, true};
    get = [&] { return JsonResponse(200, ServiceRootJson(options_)); };
  } else if (v1 && n == 3 && seg[2] == "$metadata") {
    t = {true, true};
    get = [] {
      HttpResponse r;
      r.body = MetadataXml();
      r.headers.emplace_back("Content-Type", "application/xml");
      return r;
    };
  } else if (v1 && n == 3 && seg[2] == "odata") {
    t = {true, true};
    get = [] { return JsonResponse(200, ODataServiceJson()); };
  } else if (v1 && at(2, "Chassis")) {
    if (n == 3) {
      t.found = true;
      get = [] { return JsonResponse(200, ChassisCollectionJson()); };
    } else if (seg[3] == kChassisId) {
      if (n == 4) {
        t.found = true;
        get = [&] { return JsonResponse(200, ChassisJson(need_sensors())); };
      } else if (seg[4] == "Sensors" && n == 5) {
        t.found = true;
        get = [&] { return JsonResponse(200, SensorCollectionJson(need_sensors())); };
      } else if (seg[4] == "Sensors" && n == 6) {
        std::optional<SensorView> s = OneSensor(seg[5]);
        if (s && IsRedfishSensor(s->info)) {
          t.found = true;
          get = [s] { return JsonResponse(200, SensorJson(*s)); };
        }
      } else if (seg[4] == "ThermalSubsystem" && n == 5) {
        t.found = true;
        get = [&] { return JsonResponse(200, ThermalSubsystemJson(need_sensors())); };
      } else if (seg[4] == "ThermalSubsystem" && n == 6 && seg[5] == "ThermalMetrics") {
        t.found = true;
        get = [&] { return JsonResponse(200, ThermalMetricsJson(need_sensors())); };
      } else if (seg[4] == "PowerSubsystem" && n == 5 && HasPowerData(need_sensors())) {
        t.found = true;
        get = [&] { return JsonResponse(200, PowerSubsystemJson(need_sensors())); };
      }
    }
  } else if (v1 && at(2, "Systems")) {
    if (n == 3) {
      t.found = true;
      get = [] { return JsonResponse(200, SystemCollectionJson()); };
    } else if (seg[3] == kSystemId) {
      if (n == 4) {
        t.found = true;
        get = [&] { return JsonResponse(200, SystemJson(options_, need_sensors())); };
      } else if (seg[4] == "Storage" && n == 5) {
        t.found = true;
        get = [] { return JsonResponse(200, StorageCollectionJson()); };
      } else if (seg[4] == "Storage" && seg[5] == kStorageId) {
        if (n == 6) {
          t.found = true;
          get = [&] { return JsonResponse(200, StorageJson(options_, need_sensors())); };
        } else if (n == 8 && seg[6] == "Drives") {
          for (size_t i = 0; i < options_.drives.size(); ++i) {
            if (seg[7] == std::to_string(i)) {
              t.found = true;
              get = [&, i] { return JsonResponse(200, DriveJson(options_, i, need_sensors())); };
            }
          }
        }
      }
    }
  } else if (v1 && at(2, "SessionService")) {
    if (n == 3) {
      t.found = true;
      get = [&] { return JsonResponse(200, SessionServiceJson(options_)); };
    } else if (seg[3] == "Sessions" && n == 4) {
      t = {true, false, kAllowSessions};
      if (req.method == "POST") return PostSession(req, now_ns);
      get = [&] {
        std::vector<Session> all = sessions_.List(now_ns), shown;
        for (const Session& s : all) {
          if (auth.role == Role::kAdministrator || s.user == auth.user) shown.push_back(s);
        }
        return JsonResponse(200, SessionCollectionJson(shown));
      };
    } else if (seg[3] == "Sessions" && n == 5 && seg[4] == "Members") {
      // DSP0266: a POST to a collection's Members property is a POST to the collection.
      t = {true, false, "POST"};
      if (req.method == "POST") return PostSession(req, now_ns);
    } else if (seg[3] == "Sessions" && n == 5) {
      std::optional<Session> s = sessions_.Get(seg[4], now_ns);
      // Another user's session exists for administrators only.
      if (s && (auth.role == Role::kAdministrator || s->user == auth.user)) {
        t = {true, false, kAllowSession};
        if (req.method == "DELETE") {
          sessions_.Delete(s->id);
          return JsonResponse(200, SessionJson(*s));
        }
        get = [s] { return JsonResponse(200, SessionJson(*s)); };
      }
    }
  } else if (v1 && at(2, "AccountService")) {
    if (n == 3) {
      t.found = true;
      get = [] { return JsonResponse(200, AccountServiceJson()); };
    } else if (seg[3] == "Accounts" && n == 4) {
      t.found = true;
      get = [&] { return JsonResponse(200, AccountCollectionJson(accounts_.list())); };
    } else if (seg[3] == "Accounts" && n == 5) {
      if (const Account* a = accounts_.Find(seg[4])) {
        t.found = true;
        get = [a] { return JsonResponse(200, AccountJson(*a)); };
      }
    } else if (seg[3] == "Roles" && n == 4) {
      t.found = true;
      get = [] { return JsonResponse(200, RoleCollectionJson()); };
    } else if (seg[3] == "Roles" && n == 5) {
      if (std::optional<Role> r = ParseRole(seg[4])) {
        t.found = true;
        get = [r] { return JsonResponse(200, RoleJson(*r)); };
      }
    }
  }
  if (!t.found) return Error(404, "ResourceNotFound", "No resource at " + req.path + ".");
  // A route without a GET (Sessions/Members) answers 405 to it too.
  if ((req.method != "GET" && req.method != "HEAD") || !get) {
    HttpResponse r = Error(405, "OperationNotAllowed",
                           req.method + " is not allowed on " + req.path + "; allowed: " + t.allow);
    r.headers.emplace_back("Allow", t.allow);
    return r;
  }
  HttpResponse r = get();
  r.headers.emplace_back("Allow", t.allow);
  return r;
}

}  // namespace spd::redfish
