// The JSON side of etcd's v3 gateway (internal to src/cluster, exposed for tests).
//
// etcd's gateway maps its protobuf messages to JSON the proto3 way: bytes fields (keys, values)
// are base64 (standard alphabet, padded), 64-bit integers are decimal strings, and fields at
// their default value (0, false, empty) are left out. Errors come back as
//   {"error": "etcdserver: ...", "message": "etcdserver: ...", "code": 5}
// on unary calls (code is the gRPC code), and on streams (watch, lease keepalive) as a line
//   {"error": {"grpc_code": 5, "http_code": 404, "message": "...", "http_status": "Not Found"}}
// Everything here reads untrusted input without throwing: a value of the wrong type reads as
// missing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cluster/etcd_client.h"
#include "common/status.h"

namespace spd::etcd_codec {

std::string Base64Encode(std::string_view in);
// Standard alphabet; padding optional; whitespace and any other character refused.
std::optional<std::string> Base64Decode(std::string_view in);

// The smallest key greater than every key starting with `prefix` (etcd's range_end for a
// prefix): the prefix with its last byte below 0xff incremented and what follows dropped. For
// an empty prefix or one of all 0xff bytes it is "\0", which etcd reads as "to the end".
std::string PrefixEnd(std::string_view prefix);

// A proto3-JSON int64: a decimal string, or (leniently) a JSON integer. Missing: 0. Present but
// not an integer: nullopt.
std::optional<int64_t> Int(const nlohmann::json& obj, const char* field);
// A base64 bytes field, decoded. Missing: "". Not valid base64: nullopt.
std::optional<std::string> Bytes(const nlohmann::json& obj, const char* field);
// A string field; missing or not a string: "".
std::string Str(const nlohmann::json& obj, const char* field);
bool Bool(const nlohmann::json& obj, const char* field);

// An mvccpb.KeyValue object. False when a field is malformed.
bool ParseKeyValue(const nlohmann::json& obj, KeyValue* kv);
// header.revision of a response (0 when missing).
int64_t HeaderRevision(const nlohmann::json& response);

// The Status of an etcd error object (either shape above), or OK when `body` has no "error".
// `where` starts the message ("etcd http://127.0.0.1:2379 /v3/kv/put"). A gRPC code outside
// 1..16 becomes kUnknown.
Status ErrorStatus(const nlohmann::json& body, std::string_view where);

}  // namespace spd::etcd_codec
