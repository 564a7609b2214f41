#include "redfish/redfish_service.h"

#include <openssl/evp.h>
#include <strings.h>

#include <cstdio>
#include <cstring>
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

// The resources that answer without authentication (DSP0266: the service root, $metadata,
// the OData service document, and the POST that creates a session).
bool IsPublic(const std::string& method, const std::vector<std::string>& seg) {
  return seg.size() <= 2 || (seg.size() == 3 && (seg[2] == "$metadata" || seg[2] == "odata")) ||
         (method == "POST" && seg.size() >= 4 && seg.size() <= 5 && seg[2] == "SessionService" &&
          seg[3] == "Sessions" && (seg.size() == 4 || seg[4] == "Members"));
}

bool IsReference(const Json& v) {
  return v.is_object() && v.size() == 1 && v.begin().key() == "@odata.id" && v.begin()->is_string();
}

}  // namespace

// Outside the anonymous namespace: ExpandQuery, a member type of RedfishService, holds one.
enum class ExpandKind { kNone, kAll, kNoLinks, kLinks };  // none, "*", ".", "~"

struct RedfishService::ExpandQuery {
  ExpandKind kind = ExpandKind::kNone;
  uint32_t levels = 1;
};

// One request: its snapshot of every sensor, read once when first needed, so that a reply with
// many sensors (a collection put in line by $expand) shows one instant of the cache.
struct RedfishService::RequestCtx {
  const RedfishService* service = nullptr;
  bool sensors_read = false;
  std::vector<SensorView> sensors;
  std::shared_ptr<const SensorIndex> index;  // of the snapshot
  size_t expanded = 0;                       // resources put in line so far
  const std::vector<SensorView>& All() {
    if (!sensors_read) sensors = service->Sensors(&index);
    sensors_read = true;
    return sensors;
  }
};

// What a URI names: its methods, its GET, or the answer to a POST or DELETE already made.
struct RedfishService::Target {
  bool found = false;
  const char* allow = kAllowGet;
  std::function<Json()> json;         // the body of a JSON resource
  std::function<HttpResponse()> raw;  // a ready reply ($metadata, a cached Sensor body)
  // A ready reply for $expand "." or "*" (the Sensors collection); else Expand on json.
  std::function<HttpResponse()> expanded;
  std::optional<HttpResponse> done;
};

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
      .dump(-1, ' ', false, Json::error_handler_t::replace);  // echoed paths may not be UTF-8
}

std::string ETagOf(const std::string& body) {
  // 8 bytes a step (one multiply each, where byte-wise FNV-1a took eight: 41 KB of expanded
  // Sensors hashed in ~90 us that way), the high bits of each product folded back into the low.
  constexpr uint64_t kMul = 0x9e3779b97f4a7c15ull;
  uint64_t h = 1469598103934665603ull ^ body.size();
  size_t i = 0;
  for (; i + 8 <= body.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, body.data() + i, 8);
    h = (h ^ w) * kMul;
    h ^= h >> 32;
  }
  for (; i < body.size(); ++i) h = (h ^ static_cast<unsigned char>(body[i])) * kMul;
  h ^= h >> 29;  // the finalizer of splitmix64
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
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

std::vector<RedfishService::SensorView> RedfishService::Sensors(
    std::shared_ptr<const SensorIndex>* index_out) const {
  std::vector<SensorView> out;
  const std::shared_ptr<const SensorIndex> idx = Index();
  if (index_out != nullptr) *index_out = idx;
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

std::optional<RedfishService::SensorView> RedfishService::OneSensor(const std::string& id,
                                                                    uint32_t* index) const {
  const std::shared_ptr<const SensorIndex> idx = Index();
  auto it = idx->by_id.find(id);
  if (it == idx->by_id.end()) return std::nullopt;
  *index = it->second;
  SensorView v;
  v.id = id;
  if (spdr_sensor_info_get(idx->handles[it->second], &v.info) != SPDR_OK ||
      spdr_sensor_read_cached(idx->handles[it->second], &v.reading, 0) != SPDR_OK) {
    cache_read_errors_total.Add();
    return std::nullopt;
  }
  return v;
}

namespace {

HttpResponse TooLargeToExpand(const ServiceOptions& o) {
  return Error(507, "InsufficientStorage",
               "The expanded reply would pass the service's limits (" +
                   std::to_string(o.expand_resources_max) + " resources, " +
                   std::to_string(o.expand_bytes_max) +
                   " bytes); ask for fewer $levels or expand a smaller resource.");
}

// Whether two readings of a sensor make the same Sensor body (the fields SensorJson shows).
bool SameBody(const spdr_reading& a, const spdr_reading& b) {
  return a.status == b.status && a.updated_monotonic_ns == b.updated_monotonic_ns &&
         a.value_si == b.value_si && a.threshold_mask == b.threshold_mask && a.max == b.max &&
         a.crit == b.crit && a.min == b.min && a.lcrit == b.lcrit;
}

}  // namespace

HttpResponse RedfishService::SensorResponse(uint32_t index, const SensorView& s) const {
  HttpResponse r;
  r.headers.emplace_back("Content-Type", "application/json;charset=utf-8");
  {
    std::lock_guard<std::mutex> lock(bodies_mu_);
    if (index < bodies_.size() && bodies_[index].valid &&
        SameBody(bodies_[index].reading, s.reading)) {
      r.body = bodies_[index].body;
      r.etag = bodies_[index].etag;
      return r;
    }
  }
  r.body = JsonResponse(200, SensorJson(s)).body;
  r.etag = ETagOf(r.body);
  std::lock_guard<std::mutex> lock(bodies_mu_);
  if (bodies_.size() <= index) bodies_.resize(index + 1);
  bodies_[index] = SensorBody{true, s.reading, r.body, r.etag};
  return r;
}

HttpResponse RedfishService::ExpandedSensors(RequestCtx& ctx) const {
  const std::vector<SensorView>& all = ctx.All();
  Json c = SensorCollectionJson(all);
  if (c["Members"].size() > options_.expand_resources_max) return TooLargeToExpand(options_);
  c["Members"] = Json::array();
  HttpResponse r = JsonResponse(200, c);
  // Keys are sorted, and those before Members hold URIs and types: this is the property.
  static const std::string kMembers = "\"Members\":[]";
  const size_t at = r.body.find(kMembers);
  if (at == std::string::npos) return Error(500, "InternalError", "The collection lost Members.");
  std::string members;
  for (size_t i = 0; i < all.size(); ++i) {
    if (!IsRedfishSensor(all[i].info)) continue;
    if (!members.empty()) members += ',';
    members += SensorResponse(uint32_t(i), all[i]).body;
    if (members.size() > options_.expand_bytes_max) return TooLargeToExpand(options_);
  }
  r.body.insert(at + kMembers.size() - 1, members);
  if (r.body.size() > options_.expand_bytes_max) return TooLargeToExpand(options_);
  return r;
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
    const bool is_public = IsPublic(req.method, seg);
    // A public resource with $expand shows what it links to only to those who may see it.
    if (!is_public || req.query.count("$expand") != 0) auth = Authenticate(req, now_ns);
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
  const std::string etag = resp->etag.empty() ? ETagOf(resp->body) : resp->etag;
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

namespace {

// The value of $expand: "*", "." or "~", alone or with "($levels=N)"; an error reply when it is
// none of those.
std::optional<HttpResponse> ParseExpand(const std::string& v, ExpandKind* kind, uint32_t* levels) {
  const auto bad = [&] {
    return Error(400, "QueryParameterValueFormatError",
                 "The value '" + v +
                     "' for the parameter $expand is not a format that the parameter can accept "
                     "(*, . or ~, optionally followed by ($levels=N)).");
  };
  if (v.empty()) return bad();
  switch (v[0]) {
    case '*':
      *kind = ExpandKind::kAll;
      break;
    case '.':
      *kind = ExpandKind::kNoLinks;
      break;
    case '~':
      *kind = ExpandKind::kLinks;
      break;
    default:
      return bad();
  }
  *levels = 1;
  if (v.size() == 1) return std::nullopt;
  static const std::string kOpen = "($levels=";
  if (v.size() < 1 + kOpen.size() + 2 || v.compare(1, kOpen.size(), kOpen) != 0 || v.back() != ')')
    return bad();
  const std::string n = v.substr(1 + kOpen.size(), v.size() - kOpen.size() - 2);
  if (n.empty() || n.size() > 9) return bad();
  uint32_t l = 0;
  for (char c : n) {
    if (c < '0' || c > '9') return bad();
    l = l * 10 + uint32_t(c - '0');
  }
  if (l < 1 || l > kExpandLevelsMax)
    return Error(400, "QueryParameterOutOfRange",
                 "The value '" + n + "' for the query parameter $levels is out of range 1-" +
                     std::to_string(kExpandLevelsMax) + ".");
  *levels = l;
  return std::nullopt;
}

}  // namespace

HttpResponse RedfishService::Route(const HttpRequest& req, const Auth& auth, uint64_t now_ns) {
  ExpandQuery expand;
  for (const auto& [k, v] : req.query) {
    if (k == "$expand") {
      if (std::optional<HttpResponse> e = ParseExpand(v, &expand.kind, &expand.levels)) return *e;
    } else if (!k.empty() && (k[0] == '$' || k == "only" || k == "excerpt")) {
      return Error(501, "QueryNotSupported", "Query parameter " + k + " is not supported.");
    }
  }
  RequestCtx ctx;
  ctx.service = this;
  Target t = Find(req, Segments(req.path), auth, now_ns, ctx);
  if (t.done) return std::move(*t.done);
  if (!t.found) return Error(404, "ResourceNotFound", "No resource at " + req.path + ".");
  // A route without a GET (Sessions/Members) answers 405 to it too.
  if ((req.method != "GET" && req.method != "HEAD") || (!t.json && !t.raw)) {
    HttpResponse r = Error(405, "OperationNotAllowed",
                           req.method + " is not allowed on " + req.path + "; allowed: " + t.allow);
    r.headers.emplace_back("Allow", t.allow);
    return r;
  }
  HttpResponse r;
  if (t.expanded && (expand.kind == ExpandKind::kAll || expand.kind == ExpandKind::kNoLinks)) {
    r = t.expanded();
    if (r.status != 200) return r;
  } else if (t.raw && (expand.kind == ExpandKind::kNone || !t.json)) {
    r = t.raw();
  } else {
    Json j = t.json();
    if (expand.kind != ExpandKind::kNone &&
        !Expand(j, expand, expand.levels, false, auth, now_ns, ctx))
      return TooLargeToExpand(options_);
    r = JsonResponse(200, j);
    if (expand.kind != ExpandKind::kNone && r.body.size() > options_.expand_bytes_max)
      return TooLargeToExpand(options_);
  }
  r.headers.emplace_back("Allow", t.allow);
  return r;
}

bool RedfishService::Expand(Json& j, const ExpandQuery& q, uint32_t levels, bool in_links,
                            const Auth& auth, uint64_t now_ns, RequestCtx& ctx) {
  // "*" every reference, "." those outside Links, "~" those inside.
  const auto wanted = [&](bool links) {
    return q.kind == ExpandKind::kAll || (q.kind == ExpandKind::kNoLinks && !links) ||
           (q.kind == ExpandKind::kLinks && links);
  };
  const auto visit = [&](Json& v, bool links) {
    if (!IsReference(v)) {
      return !(v.is_object() || v.is_array()) || Expand(v, q, levels, links, auth, now_ns, ctx);
    }
    if (!wanted(links)) return true;
    const std::string& uri = v.begin()->get_ref<const std::string&>();
    const std::vector<std::string> seg = Segments(uri);
    // Only what this client could GET; a reference it may not follow stays a reference.
    if (uri.find('?') != std::string::npos || (!auth.ok && !IsPublic("GET", seg))) return true;
    HttpRequest get;
    get.method = "GET";
    get.path = uri;
    Target t = Find(get, seg, auth, now_ns, ctx);
    if (!t.found || !t.json) return true;
    if (++ctx.expanded > options_.expand_resources_max) return false;
    Json r = t.json();
    if (levels > 1 && !Expand(r, q, levels - 1, false, auth, now_ns, ctx)) return false;
    v = std::move(r);
    return true;
  };
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!visit(*it, in_links || it.key() == "Links")) return false;
    }
  } else if (j.is_array()) {
    for (Json& v : j) {
      if (!visit(v, in_links)) return false;
    }
  }
  return true;
}

RedfishService::Target RedfishService::Find(const HttpRequest& req,
                                            const std::vector<std::string>& seg, const Auth& auth,
                                            uint64_t now_ns, RequestCtx& ctx) {
  const size_t n = seg.size();
  auto at = [&](size_t i, const char* s) { return n > i && seg[i] == s; };
  Target t;
  const bool v1 = at(0, "redfish") && at(1, "v1");
  if (n == 1 && at(0, "redfish")) {
    t.found = true;
    t.json = [] { return Json{{"v1", "/redfish/v1/"}}; };
  } else if (v1 && n == 2) {
    t.found = true;
    t.json = [this] { return ServiceRootJson(options_); };
  } else if (v1 && n == 3 && seg[2] == "$metadata") {
    t.found = true;
    t.raw = [] {
      HttpResponse r;
      r.body = MetadataXml();
      r.headers.emplace_back("Content-Type", "application/xml");
      return r;
    };
  } else if (v1 && n == 3 && seg[2] == "odata") {
    t.found = true;
    t.json = [] { return ODataServiceJson(); };
  } else if (v1 && at(2, "Chassis")) {
    if (n == 3) {
      t.found = true;
      t.json = [] { return ChassisCollectionJson(); };
    } else if (seg[3] == kChassisId) {
      if (n == 4) {
        t.found = true;
        t.json = [&ctx] { return ChassisJson(ctx.All()); };
      } else if (seg[4] == "Sensors" && n == 5) {
        t.found = true;
        t.json = [&ctx] { return SensorCollectionJson(ctx.All()); };
        t.expanded = [this, &ctx] { return ExpandedSensors(ctx); };
      } else if (seg[4] == "Sensors" && n == 6) {
        // In a reply that already holds the snapshot (an expanded collection), from it.
        std::optional<SensorView> s;
        uint32_t i = 0;
        if (ctx.sensors_read) {
          auto it = ctx.index->by_id.find(seg[5]);
          if (it != ctx.index->by_id.end() && it->second < ctx.sensors.size())
            s = ctx.sensors[it->second];
        } else {
          s = OneSensor(seg[5], &i);
        }
        if (s && IsRedfishSensor(s->info)) {
          t.found = true;
          t.json = [s] { return SensorJson(*s); };
          if (!ctx.sensors_read) t.raw = [this, s, i] { return SensorResponse(i, *s); };
        }
      } else if (seg[4] == "ThermalSubsystem" && n == 5) {
        t.found = true;
        t.json = [&ctx] { return ThermalSubsystemJson(ctx.All()); };
      } else if (seg[4] == "ThermalSubsystem" && n == 6 && seg[5] == "ThermalMetrics") {
        t.found = true;
        t.json = [&ctx] { return ThermalMetricsJson(ctx.All()); };
      } else if (seg[4] == "PowerSubsystem" && n == 5 && HasPowerData(ctx.All())) {
        t.found = true;
        t.json = [&ctx] { return PowerSubsystemJson(ctx.All()); };
      }
    }
  } else if (v1 && at(2, "Systems")) {
    if (n == 3) {
      t.found = true;
      t.json = [] { return SystemCollectionJson(); };
    } else if (seg[3] == kSystemId) {
      if (n == 4) {
        t.found = true;
        t.json = [this, &ctx] { return SystemJson(options_, ctx.All()); };
      } else if (seg[4] == "Storage" && n == 5) {
        t.found = true;
        t.json = [] { return StorageCollectionJson(); };
      } else if (seg[4] == "Storage" && seg[5] == kStorageId) {
        if (n == 6) {
          t.found = true;
          t.json = [this, &ctx] { return StorageJson(options_, ctx.All()); };
        } else if (n == 8 && seg[6] == "Drives") {
          for (size_t i = 0; i < options_.drives.size(); ++i) {
            if (seg[7] == std::to_string(i)) {
              t.found = true;
              t.json = [this, &ctx, i] { return DriveJson(options_, i, ctx.All()); };
            }
          }
        }
      }
    }
  } else if (v1 && at(2, "SessionService")) {
    if (n == 3) {
      t.found = true;
      t.json = [this] { return SessionServiceJson(options_); };
    } else if (seg[3] == "Sessions" && n == 4) {
      t.found = true;
      t.allow = kAllowSessions;
      if (req.method == "POST") t.done = PostSession(req, now_ns);
      t.json = [this, &auth, now_ns] {
        std::vector<Session> all = sessions_.List(now_ns), shown;
        for (const Session& s : all) {
          if (auth.role == Role::kAdministrator || s.user == auth.user) shown.push_back(s);
        }
        return SessionCollectionJson(shown);
      };
    } else if (seg[3] == "Sessions" && n == 5 && seg[4] == "Members") {
      // DSP0266: a POST to a collection's Members property is a POST to the collection.
      t.found = true;
      t.allow = "POST";
      if (req.method == "POST") t.done = PostSession(req, now_ns);
    } else if (seg[3] == "Sessions" && n == 5) {
      std::optional<Session> s = sessions_.Get(seg[4], now_ns);
      // Another user's session exists for administrators only.
      if (s && (auth.role == Role::kAdministrator || s->user == auth.user)) {
        t.found = true;
        t.allow = kAllowSession;
        if (req.method == "DELETE") {
          sessions_.Delete(s->id);
          t.done = JsonResponse(200, SessionJson(*s));
        }
        t.json = [s] { return SessionJson(*s); };
      }
    }
  } else if (v1 && at(2, "AccountService")) {
    if (n == 3) {
      t.found = true;
      t.json = [] { return AccountServiceJson(); };
    } else if (seg[3] == "Accounts" && n == 4) {
      t.found = true;
      t.json = [this] { return AccountCollectionJson(accounts_.list()); };
    } else if (seg[3] == "Accounts" && n == 5) {
      if (const Account* a = accounts_.Find(seg[4])) {
        t.found = true;
        t.json = [a] { return AccountJson(*a); };
      }
    } else if (seg[3] == "Roles" && n == 4) {
      t.found = true;
      t.json = [] { return RoleCollectionJson(); };
    } else if (seg[3] == "Roles" && n == 5) {
      if (std::optional<Role> r = ParseRole(seg[4])) {
        t.found = true;
        t.json = [r] { return RoleJson(*r); };
      }
    }
  }
  return t;
}

}  // namespace spd::redfish
