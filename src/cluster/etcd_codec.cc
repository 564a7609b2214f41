#include "cluster/etcd_codec.h"

#include <array>
#include <charconv>

namespace spd::etcd_codec {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> MakeDecodeTable() {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr std::array<int8_t, 256> kDecode = MakeDecodeTable();

const nlohmann::json* Field(const nlohmann::json& obj, const char* field) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(field);
  return it == obj.end() ? nullptr : &*it;
}

}  // namespace

std::string Base64Encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (static_cast<uint8_t>(in[i]) << 16) |
                       (static_cast<uint8_t>(in[i + 1]) << 8) | static_cast<uint8_t>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  const size_t rest = in.size() - i;
  if (rest > 0) {
    uint32_t v = static_cast<uint8_t>(in[i]) << 16;
    if (rest == 2) v |= static_cast<uint8_t>(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> Base64Decode(std::string_view in) {
  size_t n = in.size();
  // Up to two '=' at the end; none elsewhere.
  if (n > 0 && in[n - 1] == '=') --n;
  if (n > 0 && in[n - 1] == '=') --n;
  if (in.size() % 4 != 0 && n != in.size()) return std::nullopt;  // padded, but badly
  if (n % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(n / 4 * 3 + 2);
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; ++i) {
    const int8_t d = kDecode[static_cast<uint8_t>(in[i])];
    if (d < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(d);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    const auto last = static_cast<uint8_t>(end.back());
    if (last < 0xff) {
      end.back() = static_cast<char>(last + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

std::optional<int64_t> Int(const nlohmann::json& obj, const char* field) {
  const nlohmann::json* f = Field(obj, field);
  if (f == nullptr || f->is_null()) return 0;
  if (f->is_number_integer()) return f->get<int64_t>();
  if (!f->is_string()) return std::nullopt;
  const std::string& s = f->get_ref<const std::string&>();
  int64_t v = 0;
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

std::optional<std::string> Bytes(const nlohmann::json& obj, const char* field) {
  const nlohmann::json* f = Field(obj, field);
  if (f == nullptr || f->is_null()) return std::string();
  if (!f->is_string()) return std::nullopt;
  return Base64Decode(f->get_ref<const std::string&>());
}

std::string Str(const nlohmann::json& obj, const char* field) {
  const nlohmann::json* f = Field(obj, field);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::string();
}

bool Bool(const nlohmann::json& obj, const char* field) {
  const nlohmann::json* f = Field(obj, field);
  return f != nullptr && f->is_boolean() && f->get<bool>();
}

bool ParseKeyValue(const nlohmann::json& obj, KeyValue* kv) {
  if (!obj.is_object()) return false;
  auto key = Bytes(obj, "key");
  auto value = Bytes(obj, "value");
  auto create = Int(obj, "create_revision");
  auto mod = Int(obj, "mod_revision");
  auto version = Int(obj, "version");
  auto lease = Int(obj, "lease");
  if (!key || !value || !create || !mod || !version || !lease) return false;
  kv->key = std::move(*key);
  kv->value = std::move(*value);
  kv->create_revision = *create;
  kv->mod_revision = *mod;
  kv->version = *version;
  kv->lease = *lease;
  return true;
}

int64_t HeaderRevision(const nlohmann::json& response) {
  const nlohmann::json* h = Field(response, "header");
  if (h == nullptr) return 0;
  return Int(*h, "revision").value_or(0);
}

Status ErrorStatus(const nlohmann::json& body, std::string_view where) {
  const nlohmann::json* e = Field(body, "error");
  if (e == nullptr) return Status::Ok();
  std::string message;
  int64_t code = 0;
  if (e->is_object()) {  // a stream's error line
    message = Str(*e, "message");
    code = Int(*e, "grpc_code").value_or(0);
  } else {
    message = Str(body, "message");
    if (message.empty()) message = Str(body, "error");
    code = Int(body, "code").value_or(0);
  }
  if (message.empty()) message = "(no message)";
  const StatusCode sc =
      code >= 1 && code <= 16 ? static_cast<StatusCode>(code) : StatusCode::kUnknown;
  std::string text(where);
  text += ": ";
  text += message;
  text += " (gRPC code " + std::to_string(code) + ")";
  return Status(sc, text);
}

}  // namespace spd::etcd_codec
