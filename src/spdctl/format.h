// spdctl's output: one object model, three renderings.
//
// Every answer is first turned into a JSON document with `apiVersion` (spd.v1), a `kind` (one of
// kKinds below) and fixed, documented field names in lowerCamelCase (docs/spdctl.md). `-o json`
// prints it, `-o yaml` prints the same tree as YAML, `-o table` prints columns for people. The JSON
// and YAML shapes are pinned by golden files (tests/golden/spdctl/): a change to them is a change
// to a public interface and must change apiVersion, not slip in (LINSTOR's users were bitten by
// exactly that).
//
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "apply/plan.h"
#include "spd/v1/access.pb.h"
#include "spd/v1/audit.pb.h"
#include "spd/v1/events.pb.h"
#include "spd/v1/node.pb.h"
#include "spd/v1/policy.pb.h"
#include "spd/v1/pools.pb.h"
#include "spd/v1/volumes.pb.h"

namespace spd::ctl {

inline constexpr const char* kApiVersion = "spd.v1";

// Every kind spdctl prints (each made by one function below); format_test.cc pins each one's
// JSON and YAML with golden files and fails for a kind in this list without them.
inline constexpr const char* kKinds[] = {"Volume",
                                         "VolumeList",
                                         "Pool",
                                         "PoolList",
                                         "NodeInfo",
                                         "ClusterNodeList",
                                         "ReplicatedVolumeList",
                                         "Calibration",
                                         "Event",
                                         "Tenant",
                                         "TenantList",
                                         "StorageClass",
                                         "StorageClassList",
                                         "VolumePolicy",
                                         "VolumePolicyList",
                                         "UidRoleList",
                                         "TokenList",
                                         "NewToken",
                                         "Plan",
                                         "AuditHead",
                                         "AuditVerification",
                                         "Deleted"};

enum class Output { kTable, kJson, kYaml };

using Doc = nlohmann::ordered_json;
// A document's first two fields: apiVersion and kind (format.cc, format_policy.cc).
Doc Header(const char* kind);

Doc VolumeDoc(const v1::Volume& v);  // kind Volume
Doc VolumeListDoc(const std::vector<v1::Volume>& vs);
Doc PoolDoc(const v1::Pool& p);
Doc PoolListDoc(const std::vector<v1::Pool>& ps);
Doc NodeDoc(const v1::NodeInfo& n);
Doc ClusterNodeListDoc(const v1::ListClusterNodesResponse& r);  // kind ClusterNodeList
Doc ReplicaListDoc(const v1::ListReplicasResponse& r);          // kind ReplicatedVolumeList
Doc CalibrationDoc(const v1::CalibrateResponse& c);             // kind Calibration
Doc EventDoc(const v1::Event& e);
// Policy objects: intents in the apply file's shape (lowerCamelCase, only what is set).
Doc IntentDoc(const v1::Intent& in);
Doc TenantDoc(const v1::Tenant& t);  // kind Tenant: name, intent ({} when none)
Doc TenantListDoc(const std::vector<v1::Tenant>& ts);
Doc StorageClassDoc(const v1::StorageClass& sc);
Doc StorageClassListDoc(const std::vector<v1::StorageClass>& cs);
Doc VolumePolicyDoc(const v1::VolumePolicy& p);
Doc VolumePolicyListDoc(const std::vector<v1::VolumePolicy>& ps);
// Access (admins): the uid map, API tokens (never their secrets).
Doc UidRoleListDoc(const std::vector<v1::UidRole>& es);  // kind UidRoleList
Doc TokenListDoc(const std::vector<v1::Token>& ts);      // kind TokenList
// kind NewToken: the token's fields and its secret (shown once); its table is the secret alone.
Doc NewTokenDoc(const v1::CreateTokenResponse& r);
// kind Plan (spdctl apply, diff): the changes in order (op create|update|delete, kind, name,
// details as the plan's text has them), the counts, and whether they were carried out.
Doc PlanDoc(const apply::Plan& plan, bool dry_run, bool applied);
// The audit log: its head, a verification's result.
Doc AuditHeadDoc(const v1::AuditHead& h);  // kind AuditHead
Doc AuditVerificationDoc(bool ok, uint64_t entries, uint64_t bad_entry,
                         const std::string& problem);  // kind AuditVerification
// What a delete answers in json and yaml (volume, tenant, class delete).
Doc DeletedDoc(const std::string& name);  // kind Deleted

std::string RoleText(v1::Role r);  // "viewer", "tenant", "operator", "admin", "none"

std::string DurabilityText(v1::Durability d);  // "flush", "sync", "none", "unspecified"
std::string EventTypeText(v1::EventType t);    // "volume-created", ...

// The document in `out` form (table: a header line and one line per item, columns aligned).
std::string Render(const Doc& doc, Output out);
// YAML of a JSON tree (block style, keys in the tree's order).
std::string ToYaml(const Doc& doc);

}  // namespace spd::ctl
