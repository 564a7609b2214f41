#include "apply/apply_file.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

#include <algorithm>
#include <charconv>
#include <exception>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <new>
#include <sstream>
#include <tuple>
#include <utility>

namespace spd::apply {
namespace {

// The parser does not use YAML::Node: yaml-cpp's events go into this small tree instead. The
// events say what YAML::Node hides and the checks need: whether a scalar was quoted (`"5000"` is
// a string, not a number), whether it carried an explicit tag, where every node starts; and the
// builder enforces the limits while yaml-cpp parses, before a document is complete.
struct YNode {
  enum class Kind : uint8_t { kNull, kScalar, kMap, kSeq, kBadAlias };
  Kind kind = Kind::kNull;
  bool plain = false;   // a plain scalar (not quoted, not a block scalar): may be a number
  bool tagged = false;  // an explicit tag (!!str, !foo): refused where the node is read
  YAML::Mark mark;
  std::string value;  // kScalar
  // kMap, in file order. An alias shares its anchor's node: no copy, and no cycle, because an
  // anchor becomes visible only once its node is complete.
  std::vector<std::pair<std::shared_ptr<YNode>, std::shared_ptr<YNode>>> entries;
  std::vector<std::shared_ptr<YNode>> items;  // kSeq
};
using NodePtr = std::shared_ptr<YNode>;

std::string Where(std::string_view file, int line0, int column0) {
  std::string out(file);
  out += ':';
  out += std::to_string(line0 + 1);
  out += ':';
  out += std::to_string(column0 + 1);
  return out;
}

// The position just past the end of `text`, for the rare yaml-cpp error without a mark.
std::pair<int, int> EndOf(std::string_view text) {
  int line = 0;
  int column = 0;
  for (char c : text) {
    if (c == '\n') {
      ++line;
      column = 0;
    } else {
      ++column;
    }
  }
  return {line, column};
}

std::string Join(std::string_view field, std::string_view key) {
  std::string out(field);
  if (!out.empty()) out += '.';
  out += key;
  return out;
}

// Thrown out of the event handler to stop yaml-cpp at the first error; carries the Status.
class Stop : public std::exception {
 public:
  explicit Stop(Status s) : status(std::move(s)) {}
  const char* what() const noexcept override { return "apply: parse stopped"; }
  Status status;
};

// Builds one document's tree from yaml-cpp's events and hands it to `on_document` when the
// document ends.
class TreeBuilder final : public YAML::EventHandler {
 public:
  using OnDocument = std::function<Status(const NodePtr& root)>;
  TreeBuilder(std::string_view file, OnDocument on_document)
      : file_(file), on_document_(std::move(on_document)) {}

  // Where the parser is (for a syntax error): the keys of the open mappings.
  std::string PathHere() const {
    std::string path;
    for (const Open& o : stack_) {
      const YNode& n = *o.node;
      if (n.kind == YNode::Kind::kSeq) {
        path += '[' + std::to_string(n.items.size()) + ']';
      } else if (!n.entries.empty() && !n.entries.back().second) {
        const YNode& key = *n.entries.back().first;
        path = Join(path, key.kind == YNode::Kind::kScalar ? key.value : "?");
      }
    }
    return path.empty() ? "document" : path;
  }

  void OnDocumentStart(const YAML::Mark& mark) override {
    if (++documents_ > kDocumentsMax)
      throw Stop(InvalidArgument(Where(file_, mark.line, mark.column) + ": document: more than " +
                                 std::to_string(kDocumentsMax) +
                                 " documents in one file (empty ones count); split the file"));
    stack_.clear();
    anchors_.clear();
    root_.reset();
    nodes_ = 0;
  }

  void OnDocumentEnd() override {
    NodePtr root = std::move(root_);
    root_.reset();
    anchors_.clear();
    Status s = on_document_(root);
    if (!s.ok()) throw Stop(std::move(s));
  }

  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Add(New(YNode::Kind::kNull, mark), anchor);
  }

  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    auto it = anchors_.find(anchor);
    // yaml-cpp resolves the name; an id this builder has not completed is an alias inside its
    // own anchor's node (`&a [*a]`), which would make a cycle: kept as a node the reader
    // refuses.
    Attach(it != anchors_.end() ? it->second : New(YNode::Kind::kBadAlias, mark));
  }

  void OnScalar(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                const std::string& value) override {
    NodePtr n = New(YNode::Kind::kScalar, mark);
    n->plain = tag == "?";
    n->tagged = !IsNonSpecific(tag);
    n->value = value;
    Add(std::move(n), anchor);
  }

  void OnSequenceStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Push(YNode::Kind::kSeq, mark, tag, anchor);
  }
  void OnSequenceEnd() override { Pop(); }

  void OnMapStart(const YAML::Mark& mark, const std::string& tag, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Push(YNode::Kind::kMap, mark, tag, anchor);
  }
  void OnMapEnd() override { Pop(); }

 private:
  struct Open {
    NodePtr node;
    YAML::anchor_t anchor;
  };

  // yaml-cpp's tags for "no tag given": "?" for plain scalars and collections, "!" for quoted
  // and block scalars.
  static bool IsNonSpecific(const std::string& tag) { return tag == "?" || tag == "!"; }

  NodePtr New(YNode::Kind kind, const YAML::Mark& mark) {
    if (++nodes_ > kNodesMax)
      throw Stop(InvalidArgument(Where(file_, mark.line, mark.column) + ": document: more than " +
                                 std::to_string(kNodesMax) +
                                 " YAML nodes in one document (a resource needs fewer than 50)"));
    auto n = std::make_shared<YNode>();
    n->kind = kind;
    n->mark = mark;
    return n;
  }

  void Push(YNode::Kind kind, const YAML::Mark& mark, const std::string& tag,
            YAML::anchor_t anchor) {
    if (stack_.size() >= kNestingMax)
      throw Stop(InvalidArgument(Where(file_, mark.line, mark.column) + ": " + PathHere() +
                                 ": nested more than " + std::to_string(kNestingMax) +
                                 " levels deep"));
    NodePtr n = New(kind, mark);
    n->tagged = !IsNonSpecific(tag);
    stack_.push_back({std::move(n), anchor});
  }

  void Pop() {
    Open o = std::move(stack_.back());
    stack_.pop_back();
    // yaml-cpp sends a null for a missing value; should a mapping still end on a key, its value
    // is null too, so that every entry has both halves.
    YNode& n = *o.node;
    if (n.kind == YNode::Kind::kMap && !n.entries.empty() && !n.entries.back().second) {
      n.entries.back().second = std::make_shared<YNode>();
      n.entries.back().second->mark = n.entries.back().first->mark;
    }
    Add(std::move(o.node), o.anchor);
  }

  void Add(NodePtr n, YAML::anchor_t anchor) {
    if (anchor != YAML::NullAnchor) anchors_[anchor] = n;
    Attach(std::move(n));
  }

  void Attach(NodePtr n) {
    if (stack_.empty()) {
      root_ = std::move(n);
      return;
    }
    YNode& parent = *stack_.back().node;
    if (parent.kind == YNode::Kind::kSeq) {
      parent.items.push_back(std::move(n));
    } else if (parent.entries.empty() || parent.entries.back().second) {
      parent.entries.emplace_back(std::move(n), nullptr);  // a key; its value comes next
    } else {
      parent.entries.back().second = std::move(n);
    }
  }

  const std::string_view file_;
  const OnDocument on_document_;
  size_t documents_ = 0;
  size_t nodes_ = 0;
  std::vector<Open> stack_;
  std::map<YAML::anchor_t, NodePtr> anchors_;
  NodePtr root_;
};

// ---- Reading one document's tree: every function returns the first error. ----

// For "must be X, got Y".
std::string Describe(const YNode& n) {
  switch (n.kind) {
    case YNode::Kind::kNull:
      return "null";
    case YNode::Kind::kScalar: {
      std::string v = n.value.size() > 40 ? n.value.substr(0, 40) + "..." : n.value;
      return n.plain ? "'" + v + "'" : "the string \"" + v + "\"";
    }
    case YNode::Kind::kMap:
      return "a mapping";
    case YNode::Kind::kSeq:
      return "a sequence";
    case YNode::Kind::kBadAlias:
      return "an alias";
  }
  return "?";
}

class Reader {
 public:
  explicit Reader(std::string_view file) : file_(file) {}

  Status Err(const YNode& at, std::string_view field, std::string_view what) const {
    return InvalidArgument(Where(file_, at.mark.line, at.mark.column) + ": " + std::string(field) +
                           ": " + std::string(what));
  }
  // `s` already names its field (policy's validators): adds the position.
  Status At(const YNode& at, const Status& s) const {
    return InvalidArgument(Where(file_, at.mark.line, at.mark.column) + ": " +
                           std::string(s.message()));
  }

  // What every node read goes through: explicit tags and self-referencing aliases are refused.
  Status CheckNode(const YNode& n, std::string_view field) const {
    if (n.kind == YNode::Kind::kBadAlias)
      return Err(n, field, "an alias to its own enclosing node (a cycle)");
    if (n.tagged) return Err(n, field, "explicit YAML tags (!!str, !foo) are not supported");
    return Status::Ok();
  }

  // Checks that `n` is a mapping whose keys are distinct strings from `allowed`. Its values
  // are checked by CheckNode too (they are what the caller reads next).
  Status CheckMap(const YNode& n, std::string_view field,
                  std::initializer_list<std::string_view> allowed) const {
    SPD_RETURN_IF_ERROR(CheckNode(n, field));
    if (n.kind != YNode::Kind::kMap) return Err(n, field, "must be a mapping, got " + Describe(n));
    for (size_t i = 0; i < n.entries.size(); ++i) {
      const YNode& key = *n.entries[i].first;
      const YNode& value = *n.entries[i].second;
      SPD_RETURN_IF_ERROR(CheckNode(key, field.empty() ? "document" : field));
      if (key.kind != YNode::Kind::kScalar)
        return Err(key, field.empty() ? "document" : field,
                   "keys must be strings, got " + Describe(key));
      const std::string path = Join(field, key.value);
      bool known = false;
      for (std::string_view a : allowed) known = known || a == key.value;
      if (!known) {
        std::string list;
        for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
        return Err(key, path, "unknown key (allowed here: " + list + ")");
      }
      for (size_t j = 0; j < i; ++j) {
        const YNode& earlier = *n.entries[j].first;
        if (earlier.value == key.value)
          return Err(key, path,
                     "given twice (first at line " + std::to_string(earlier.mark.line + 1) + ")");
      }
      SPD_RETURN_IF_ERROR(CheckNode(value, path));
    }
    return Status::Ok();
  }

  // The value of `key` in a mapping CheckMap accepted, or nullptr when the key is missing or
  // null (`key:` or `key: ~`, as in JSON: null is "not set").
  static const YNode* Find(const YNode& map, std::string_view key) {
    for (const auto& [k, v] : map.entries)
      if (k->value == key) return v->kind == YNode::Kind::kNull ? nullptr : v.get();
    return nullptr;
  }

  Status Required(const YNode& map, std::string_view field, std::string_view key,
                  std::string_view hint, const YNode** out) const {
    *out = Find(map, key);
    if (*out == nullptr) return Err(map, Join(field, key), "required" + std::string(hint));
    return Status::Ok();
  }

  Status String(const YNode& n, std::string_view field, std::string* out) const {
    if (n.kind != YNode::Kind::kScalar)
      return Err(n, field, "must be a string, got " + Describe(n));
    *out = n.value;
    return Status::Ok();
  }

  Status Name(const YNode& n, std::string_view field, std::string* out) const {
    SPD_RETURN_IF_ERROR(String(n, field, out));
    Status s = policy::ValidateName(field, *out);
    return s.ok() ? s : At(n, s);
  }

  // A whole number written as one: plain decimal digits, no sign, no leading zero (`010` is 8
  // in YAML 1.1 and 10 in YAML 1.2), no quotes.
  Status Uint(const YNode& n, std::string_view field, uint64_t* out) const {
    if (n.kind != YNode::Kind::kScalar || !n.plain)
      return Err(n, field, "must be a number, got " + Describe(n));
    const std::string& v = n.value;
    bool digits = !v.empty() && !(v.size() > 1 && v[0] == '0');
    for (char c : v) digits = digits && c >= '0' && c <= '9';
    if (!digits) return Err(n, field, "must be a whole number written in decimal, got '" + v + "'");
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    if (ec != std::errc() || end != v.data() + v.size()) return Err(n, field, "too large: " + v);
    return Status::Ok();
  }

  // A decimal number with an optional fraction (99, 99.9), plain.
  Status Decimal(const YNode& n, std::string_view field, double* out) const {
    if (n.kind != YNode::Kind::kScalar || !n.plain)
      return Err(n, field, "must be a number, got " + Describe(n));
    const std::string& v = n.value;
    size_t i = 0;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9') ++i;
    bool ok = i > 0 && i <= 20;
    if (ok && i < v.size()) {
      size_t j = i + 1;
      while (j < v.size() && v[j] >= '0' && v[j] <= '9') ++j;
      ok = v[i] == '.' && j > i + 1 && j == v.size() && j - i <= 20;
    }
    if (!ok) return Err(n, field, "must be a decimal number like 99 or 99.9, got '" + v + "'");
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    if (ec != std::errc() || end != v.data() + v.size())
      return Err(n, field, "not a number: '" + v + "'");
    return Status::Ok();
  }

  // A size: a number of bytes or policy::ParseSize's units, quoted or not (`10G`, "512Mi").
  Status Size(const YNode& n, std::string_view field, uint64_t* out) const {
    if (n.kind != YNode::Kind::kScalar)
      return Err(n, field, "must be a size (4096, 512M, 10G), got " + Describe(n));
    Result<uint64_t> r = policy::ParseSize(field, n.value);
    if (!r.ok()) return At(n, r.status());
    *out = *r;
    return Status::Ok();
  }

 private:
  const std::string_view file_;
};

// policy::ValidateIntent names fields as the C++ model does (bytes_per_second, bound_us); the
// file spells them in lowerCamelCase. Rewrites the names so that the error names what the
// user wrote.
std::string CamelFields(std::string_view message) {
  static constexpr std::pair<std::string_view, std::string_view> kNames[] = {
      {"bytes_per_second", "bytesPerSecond"},
      {"bound_us", "boundUs"},
  };
  std::string out(message);
  for (const auto& [snake, camel] : kNames) {
    for (size_t at = out.find(snake); at != std::string::npos;
         at = out.find(snake, at + camel.size()))
      out.replace(at, snake.size(), camel);
  }
  return out;
}

// The deepest node along `path` (dot-separated keys) under `n`, for an error's position.
const YNode& Locate(const YNode& n, std::string_view path) {
  const YNode* at = &n;
  while (!path.empty()) {
    const size_t dot = path.find('.');
    const std::string_view key = path.substr(0, dot);
    const YNode* next = at->kind == YNode::Kind::kMap ? Reader::Find(*at, key) : nullptr;
    if (next == nullptr) break;
    at = next;
    path = dot == std::string_view::npos ? std::string_view() : path.substr(dot + 1);
  }
  return *at;
}

// A policy validator's verdict on the intent read from `n` (named `field`), placed at the node
// of the field it names, with the file's spelling of the names.
Status Located(const Reader& r, const YNode& n, const std::string& field, const Status& s) {
  if (s.ok()) return s;
  const std::string msg = CamelFields(s.message());
  const std::string bad_field = msg.substr(0, msg.find(": "));
  std::string_view rel = bad_field;
  if (rel.rfind(field, 0) == 0) rel.remove_prefix(std::min(rel.size(), field.size() + 1));
  const YNode& at = Locate(n, rel);
  return r.At(at, InvalidArgument(msg));
}

Status ReadRate(const Reader& r, const YNode& n, const std::string& field, policy::Rate* out) {
  SPD_RETURN_IF_ERROR(r.CheckMap(n, field, {"iops", "bytesPerSecond"}));
  if (const YNode* v = Reader::Find(n, "iops"))
    SPD_RETURN_IF_ERROR(r.Uint(*v, Join(field, "iops"), &out->iops));
  if (const YNode* v = Reader::Find(n, "bytesPerSecond"))
    SPD_RETURN_IF_ERROR(r.Size(*v, Join(field, "bytesPerSecond"), &out->bytes_per_second));
  return Status::Ok();
}

// `tenant`: a tenant's intent, which may not have a latency target, a durability or a replica
// count
// (policy::ValidateTenantIntent).
Status ReadIntent(const Reader& r, const YNode& n, const std::string& field, policy::Intent* out,
                  bool tenant = false) {
  SPD_RETURN_IF_ERROR(r.CheckMap(
      n, field,
      {"latency", "reservation", "limit", "weight", "priority", "durability", "replicas"}));
  if (tenant) {
    // Refused whatever their value (policy's words): before a bad value is reported as such.
    policy::Intent keys;
    if (Reader::Find(n, "latency")) keys.latency = policy::LatencyTarget{};
    if (Reader::Find(n, "durability")) keys.durability = Durability::kFlush;
    if (Reader::Find(n, "replicas")) keys.replicas = 1;
    SPD_RETURN_IF_ERROR(Located(r, n, field, policy::ValidateTenantIntent(field, keys)));
  }
  if (const YNode* v = Reader::Find(n, "latency")) {
    const std::string f = Join(field, "latency");
    SPD_RETURN_IF_ERROR(r.CheckMap(*v, f, {"percentile", "boundUs"}));
    const YNode* p = nullptr;
    const YNode* b = nullptr;
    SPD_RETURN_IF_ERROR(r.Required(*v, f, "percentile", " (99 for p99)", &p));
    SPD_RETURN_IF_ERROR(r.Required(*v, f, "boundUs", " (the bound in microseconds)", &b));
    policy::LatencyTarget lt;
    SPD_RETURN_IF_ERROR(r.Decimal(*p, Join(f, "percentile"), &lt.percentile));
    SPD_RETURN_IF_ERROR(r.Uint(*b, Join(f, "boundUs"), &lt.bound_us));
    out->latency = lt;
  }
  if (const YNode* v = Reader::Find(n, "reservation")) {
    out->reservation.emplace();
    SPD_RETURN_IF_ERROR(ReadRate(r, *v, Join(field, "reservation"), &*out->reservation));
  }
  if (const YNode* v = Reader::Find(n, "limit")) {
    out->limit.emplace();
    SPD_RETURN_IF_ERROR(ReadRate(r, *v, Join(field, "limit"), &*out->limit));
  }
  // An integer of 1..max at `key`, checked before narrowing to uint32_t.
  const auto count = [&](const char* key, uint32_t max, std::optional<uint32_t>* to) -> Status {
    const YNode* v = Reader::Find(n, key);
    if (v == nullptr) return Status::Ok();
    const std::string f = Join(field, key);
    uint64_t x = 0;
    SPD_RETURN_IF_ERROR(r.Uint(*v, f, &x));
    if (x == 0 || x > max)
      return r.Err(*v, f, "must be 1 to " + std::to_string(max) + ", got " + std::to_string(x));
    *to = static_cast<uint32_t>(x);
    return Status::Ok();
  };
  SPD_RETURN_IF_ERROR(count("weight", policy::kWeightMax, &out->weight));
  if (const YNode* v = Reader::Find(n, "priority")) {
    const std::string f = Join(field, "priority");
    std::string s;
    SPD_RETURN_IF_ERROR(r.String(*v, f, &s));
    out->priority = policy::ParsePriorityClass(s);
    if (!out->priority)
      return r.Err(*v, f, "must be standard, critical or background, got '" + s + "'");
  }
  if (const YNode* v = Reader::Find(n, "durability")) {
    const std::string f = Join(field, "durability");
    std::string s;
    SPD_RETURN_IF_ERROR(r.String(*v, f, &s));
    out->durability = policy::ParseDurability(s);
    if (!out->durability) return r.Err(*v, f, "must be flush, sync or none, got '" + s + "'");
  }
  SPD_RETURN_IF_ERROR(count("replicas", policy::kReplicasMax, &out->replicas));
  // The relations between fields (a limit below the reservation) and the ranges.
  return Located(
      r, n, field,
      tenant ? policy::ValidateTenantIntent(field, *out) : policy::ValidateIntent(field, *out));
}

enum class Kind { kTenant, kStorageClass, kVolume };

class FileParser {
 public:
  FileParser(std::string_view file, DesiredState* out) : r_(file), out_(out) {}

  Status Document(const NodePtr& root) {
    if (!root || root->kind == YNode::Kind::kNull) return Status::Ok();  // empty: skipped
    const YNode& doc = *root;
    SPD_RETURN_IF_ERROR(r_.CheckNode(doc, "document"));
    if (doc.kind != YNode::Kind::kMap)
      return r_.Err(doc, "document",
                    "must be a mapping (apiVersion, kind, metadata, spec), got " + (Describe(doc)));
    // apiVersion and kind first: they say which keys the rest may have.
    const YNode* api = nullptr;
    SPD_RETURN_IF_ERROR(r_.Required(doc, "", "apiVersion", " (spd.v1)", &api));
    std::string s;
    SPD_RETURN_IF_ERROR(r_.CheckNode(*api, "apiVersion"));
    SPD_RETURN_IF_ERROR(r_.String(*api, "apiVersion", &s));
    if (s != kApiVersion)
      return r_.Err(*api, "apiVersion",
                    "must be " + std::string(kApiVersion) + ", got '" + s + "'");
    const YNode* kind_node = nullptr;
    SPD_RETURN_IF_ERROR(
        r_.Required(doc, "", "kind", " (Tenant, StorageClass or Volume)", &kind_node));
    SPD_RETURN_IF_ERROR(r_.CheckNode(*kind_node, "kind"));
    SPD_RETURN_IF_ERROR(r_.String(*kind_node, "kind", &s));
    Kind kind;
    if (s == "Tenant") {
      kind = Kind::kTenant;
      SPD_RETURN_IF_ERROR(r_.CheckMap(doc, "", {"apiVersion", "kind", "metadata", "spec"}));
    } else if (s == "StorageClass") {
      kind = Kind::kStorageClass;
      SPD_RETURN_IF_ERROR(r_.CheckMap(doc, "", {"apiVersion", "kind", "metadata", "spec"}));
    } else if (s == "Volume") {
      kind = Kind::kVolume;
      SPD_RETURN_IF_ERROR(r_.CheckMap(doc, "", {"apiVersion", "kind", "metadata", "spec"}));
    } else {
      return r_.Err(*kind_node, "kind", "must be Tenant, StorageClass or Volume, got '" + s + "'");
    }

    const YNode* meta = nullptr;
    SPD_RETURN_IF_ERROR(r_.Required(doc, "", "metadata", " (with a name)", &meta));
    if (kind == Kind::kVolume)
      SPD_RETURN_IF_ERROR(r_.CheckMap(*meta, "metadata", {"name", "tenant"}));
    else
      SPD_RETURN_IF_ERROR(r_.CheckMap(*meta, "metadata", {"name"}));
    const YNode* name_node = nullptr;
    SPD_RETURN_IF_ERROR(r_.Required(*meta, "metadata", "name", "", &name_node));
    std::string name;
    SPD_RETURN_IF_ERROR(r_.Name(*name_node, "metadata.name", &name));
    SPD_RETURN_IF_ERROR(Unique(kind, name, *name_node));
    const int line = doc.mark.line + 1;

    switch (kind) {
      case Kind::kTenant: {
        DesiredTenant t{policy::Tenant{name, {}}, line};
        if (const YNode* spec = Reader::Find(doc, "spec")) {
          SPD_RETURN_IF_ERROR(r_.CheckMap(*spec, "spec", {"intent"}));
          if (const YNode* in = Reader::Find(*spec, "intent"))
            SPD_RETURN_IF_ERROR(ReadIntent(r_, *in, "spec.intent", &t.t.intent, /*tenant=*/true));
        }
        out_->tenants.push_back(std::move(t));
        return Status::Ok();
      }
      case Kind::kStorageClass: {
        DesiredStorageClass c{policy::StorageClass{name, {}}, line};
        if (const YNode* spec = Reader::Find(doc, "spec")) {
          SPD_RETURN_IF_ERROR(r_.CheckMap(*spec, "spec", {"intent"}));
          if (const YNode* in = Reader::Find(*spec, "intent"))
            SPD_RETURN_IF_ERROR(ReadIntent(r_, *in, "spec.intent", &c.sc.defaults));
        }
        out_->classes.push_back(std::move(c));
        return Status::Ok();
      }
      case Kind::kVolume:
        return Volume(doc, *meta, std::move(name), line);
    }
    return Status::Ok();
  }

 private:
  Status Volume(const YNode& doc, const YNode& meta, std::string name, int line) {
    DesiredVolume v;
    v.name = std::move(name);
    v.line = line;
    if (const YNode* t = Reader::Find(meta, "tenant"))
      SPD_RETURN_IF_ERROR(r_.Name(*t, "metadata.tenant", &v.tenant));
    const YNode* spec = nullptr;
    SPD_RETURN_IF_ERROR(r_.Required(doc, "", "spec", " (with a size)", &spec));
    SPD_RETURN_IF_ERROR(r_.CheckMap(*spec, "spec", {"size", "storageClass", "intent"}));
    const YNode* size = nullptr;
    SPD_RETURN_IF_ERROR(r_.Required(*spec, "spec", "size", " (10G, 512Mi, bytes)", &size));
    SPD_RETURN_IF_ERROR(r_.Size(*size, "spec.size", &v.size_bytes));
    if (v.size_bytes == 0 || v.size_bytes % kSizeMultiple != 0)
      return r_.Err(*size, "spec.size",
                    "must be a positive multiple of " + std::to_string(kSizeMultiple) +
                        " bytes, got " + std::to_string(v.size_bytes));
    if (const YNode* c = Reader::Find(*spec, "storageClass"))
      SPD_RETURN_IF_ERROR(r_.Name(*c, "spec.storageClass", &v.storage_class));
    if (const YNode* in = Reader::Find(*spec, "intent"))
      SPD_RETURN_IF_ERROR(ReadIntent(r_, *in, "spec.intent", &v.intent));
    out_->volumes.push_back(std::move(v));
    return Status::Ok();
  }

  Status Unique(Kind kind, const std::string& name, const YNode& at) {
    static constexpr std::string_view kKinds[] = {"Tenant", "StorageClass", "Volume"};
    const auto [it, inserted] =
        seen_.emplace(std::make_pair(static_cast<int>(kind), name), at.mark.line + 1);
    if (!inserted)
      return r_.Err(at, "metadata.name",
                    "a second " + std::string(kKinds[static_cast<int>(kind)]) + " named '" + name +
                        "' (the first is at line " + std::to_string(it->second) + ")");
    return Status::Ok();
  }

  const Reader r_;
  DesiredState* const out_;
  std::map<std::pair<int, std::string>, int> seen_;  // (kind, name) -> line of its name
};

}  // namespace

Result<DesiredState> ParseApplyFile(std::string_view text, std::string_view filename) {
  if (text.size() > kFileBytesMax)
    return InvalidArgument(Where(filename, 0, 0) + ": file: " + std::to_string(text.size()) +
                           " bytes, more than the " + std::to_string(kFileBytesMax >> 20) +
                           " MiB an apply file may have; split it");
  DesiredState out;
  FileParser fp(filename, &out);
  TreeBuilder builder(filename, [&fp](const NodePtr& root) { return fp.Document(root); });
  // yaml-cpp reports errors, including its own depth limit, as exceptions; the builder stops
  // the parse with one. Nothing may escape: the caller gets a Status.
  try {
    std::istringstream in{std::string(text)};
    YAML::Parser parser(in);
    while (parser.HandleNextDocument(builder)) {
    }
  } catch (const Stop& stop) {
    return stop.status;
  } catch (const YAML::Exception& e) {
    int line = e.mark.line;
    int column = e.mark.column;
    if (e.mark.is_null() || line < 0 || column < 0) std::tie(line, column) = EndOf(text);
    return InvalidArgument(Where(filename, line, column) + ": yaml: " + e.msg);
  } catch (const std::bad_alloc&) {
    return ResourceExhausted(std::string(filename) + ": out of memory while parsing");
  } catch (const std::exception& e) {
    return Internal(std::string(filename) + ": unexpected error while parsing: " + e.what());
  } catch (...) {
    return Internal(std::string(filename) + ": unexpected error while parsing");
  }
  return out;
}

}  // namespace spd::apply
