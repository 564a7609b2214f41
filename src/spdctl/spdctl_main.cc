// spdctl: SP Driver 2.0's command line. It speaks only the control API (api/spd/v1), over the
// daemon's unix socket or, with --address, over TCP with TLS and an API token. Noun-verb commands,
// `-o table|json|yaml`, exit codes scripts can rely on (see --help and docs/spdctl.md).
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>

#include "audit/audit_log.h"
#include "policy/model.h"
#include "spd/v1/audit.grpc.pb.h"
#include "spd/v1/events.grpc.pb.h"
#include "spd/v1/node.grpc.pb.h"
#include "spd/v1/pools.grpc.pb.h"
#include "spd/v1/volumes.grpc.pb.h"
#include "spdctl/client.h"
#include "spdctl/commands.h"
#include "spdctl/format.h"

namespace spd::ctl {
namespace {

// A size flag ("10G", "4096"): false, having printed why and set *rc to the usage exit code,
// when it does not parse.
bool SizeArg(const char* flag, const std::string& text, uint64_t* out, int* rc) {
  auto v = policy::ParseSize(flag, text);
  if (!v.ok()) {
    std::fprintf(stderr, "spdctl: %s\n", std::string(v.status().message()).c_str());
    *rc = kExitUsage;
    return false;
  }
  *out = v.value();
  return true;
}

v1::Durability ParseDurabilityFlag(const std::string& s) {
  if (s == "flush") return v1::DURABILITY_FLUSH;
  if (s == "sync") return v1::DURABILITY_SYNC;
  if (s == "none") return v1::DURABILITY_NONE;
  if (s == "async") return v1::DURABILITY_ASYNC;
  return v1::DURABILITY_UNSPECIFIED;
}

const char* kBashCompletion =
    R"(# bash completion for spdctl (source it, or put it in /etc/bash_completion.d/spdctl)
_spdctl() {
  local cur prev words cword
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  case "$prev" in
    -o|--output) COMPREPLY=($(compgen -W "table json yaml" -- "$cur")); return ;;
    --durability) COMPREPLY=($(compgen -W "flush sync none async" -- "$cur")); return ;;
    --priority) COMPREPLY=($(compgen -W "standard critical background" -- "$cur")); return ;;
    --role) COMPREPLY=($(compgen -W "viewer tenant operator admin" -- "$cur")); return ;;
    -f|--file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --socket|--tls-ca|--token-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  local noun="" verb="" i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "${COMP_WORDS[i]}" in
      -*) ;;
      *) if [ -z "$noun" ]; then noun="${COMP_WORDS[i]}"; elif [ -z "$verb" ]; then verb="${COMP_WORDS[i]}"; fi ;;
    esac
  done
  local opts="-o --output --socket --timeout --address --tls-ca --tls-server-name --token-file -h --help"
  case "$noun" in
    "") COMPREPLY=($(compgen -W "volume pool replica node calibrate events audit tenant class policy access token apply diff completion version $opts" -- "$cur")) ;;
    volume)
      case "$verb" in
        "") COMPREPLY=($(compgen -W "create get list delete resize set-durability set-replicas" -- "$cur")) ;;
        create) COMPREPLY=($(compgen -W "--size --durability --read-only --replicas $opts" -- "$cur")) ;;
        delete) COMPREPLY=($(compgen -W "--force $opts" -- "$cur")) ;;
        resize) COMPREPLY=($(compgen -W "--size $opts" -- "$cur")) ;;
        set-durability) COMPREPLY=($(compgen -W "flush sync none async $opts" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
      esac ;;
    pool) [ -z "$verb" ] && COMPREPLY=($(compgen -W "get list" -- "$cur")) || COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
    replica) [ -z "$verb" ] && COMPREPLY=($(compgen -W "list promote demote move" -- "$cur")) || COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
    node) [ -z "$verb" ] && COMPREPLY=($(compgen -W "info list" -- "$cur")) || COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
    events) COMPREPLY=($(compgen -W "--since --count $opts" -- "$cur")) ;;
    audit)
      case "$verb" in
        "") COMPREPLY=($(compgen -W "head verify" -- "$cur")) ;;
        verify) COMPREPLY=($(compgen -W "--anchor --dir $opts" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
      esac ;;
    tenant) [ -z "$verb" ] && COMPREPLY=($(compgen -W "put list delete" -- "$cur")) || COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
    class|policy)
      local iflags="--latency-target --reserve-iops --reserve-bps --limit-iops --limit-bps --weight --priority --durability"
      case "$verb" in
        "") [ "$noun" = class ] && COMPREPLY=($(compgen -W "put get list delete" -- "$cur")) || COMPREPLY=($(compgen -W "set get list" -- "$cur")) ;;
        put) COMPREPLY=($(compgen -W "$iflags $opts" -- "$cur")) ;;
        set) COMPREPLY=($(compgen -W "--tenant --class $iflags $opts" -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$opts" -- "$cur")) ;;
      esac ;;
    access) [ -z "$verb" ] && COMPREPLY=($(compgen -W "set list delete" -- "$cur")) || COMPREPLY=($(compgen -W "--role --tenant $opts" -- "$cur")) ;;
    token) [ -z "$verb" ] && COMPREPLY=($(compgen -W "create list revoke" -- "$cur")) || COMPREPLY=($(compgen -W "--role --tenant --description --ttl $opts" -- "$cur")) ;;
    apply) COMPREPLY=($(compgen -W "-f --file --dry-run --prune $opts" -- "$cur")) ;;
    diff) COMPREPLY=($(compgen -W "-f --file --prune $opts" -- "$cur")) ;;
    completion) COMPREPLY=($(compgen -W "bash" -- "$cur")) ;;
  esac
}
complete -F _spdctl spdctl
)";

int Main(int argc, char** argv) {
  CLI::App app{
      "spdctl: manage an SP Driver 2.0 daemon (spd2) through its control API.\n"
      "Commands are noun-verb: `spdctl volume create db1 --size 10G --durability sync`."};
  app.footer(kExitHelp);
  app.require_subcommand(1);
  Globals g;
  const char* env_socket = std::getenv("SPD_CONTROL_SOCKET");
  g.socket = env_socket ? env_socket : "./spd-data/control.sock";
  app.add_option("--socket", g.socket,
                 "The daemon's control socket (spd2 --data-dir DIR serves DIR/control.sock)")
      ->capture_default_str();
  app.add_option("-o,--output", g.output,
                 "Output format: table (for people), json or yaml (for programs: shapes pinned "
                 "by apiVersion spd.v1)")
      ->check(CLI::IsMember({"table", "json", "yaml"}))
      ->capture_default_str();
  app.add_option("--timeout", g.timeout_s, "Seconds to wait for an answer (events: no limit)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--address", g.address,
                 "A remote daemon's control API, HOST:PORT (spd2 --control-listen): TLS, and "
                 "the API token of --token-file or $SPDCTL_TOKEN; instead of --socket");
  app.add_option("--tls-ca", g.tls_ca,
                 "With --address: PEM file of the CA that signed the daemon's certificate "
                 "(default: the system's CAs)");
  app.add_option("--tls-server-name", g.tls_server_name,
                 "With --address: the name the daemon's certificate must have (default: HOST)");
  app.add_option("--token-file", g.token_file,
                 "With --address: file holding the API token (spdctl token create); default "
                 "$SPDCTL_TOKEN");
  // Before any command's callback: the files of --address, or a usage error (exit 2).
  app.parse_complete_callback([&] {
    // CLI::PositiveNumber lets "nan" through (every comparison with it is false).
    if (!std::isfinite(g.timeout_s)) throw CLI::ValidationError("--timeout must be a number");
    if (Status s = ResolveRemote(&g); !s.ok()) throw CLI::ValidationError(std::string(s.message()));
  });
  int rc = kExitOk;
  std::unique_ptr<Client> client;
  auto C = [&]() -> Client& {
    if (!client) client = std::make_unique<Client>(g);
    return *client;
  };

  // ---- volume ----
  CLI::App* vol = app.add_subcommand("volume", "Create, inspect, resize and delete volumes");
  vol->require_subcommand(1);
  std::string name, size_text, durability = "flush";
  bool read_only = false, force = false;
  int replicas = 1;

  CLI::App* vc = vol->add_subcommand("create",
                                     "Create a volume (idempotent: the same spec again "
                                     "succeeds; another size for the name exits 4)");
  vc->add_option("name", name, "Volume name: 1-64 of [A-Za-z0-9._-]")->required();
  vc->add_option("--size", size_text, "Size: bytes or with K, M, G, T (powers of 1024): 10G")
      ->required();
  vc->add_option("--durability", durability,
                 "flush: durable at FLUSH/FUA (a disk's promise); sync: every write before its "
                 "reply; none: scratch, lost on a crash; async (with --replicas): acknowledged "
                 "once done on the primary (durable there at FLUSH/FUA), the replicas get it "
                 "within the node's lag bounds")
      ->check(CLI::IsMember({"flush", "sync", "none", "async"}))
      ->capture_default_str();
  vc->add_flag("--read-only", read_only, "Refuse writes");
  vc->add_option("--replicas", replicas,
                 "Copies on that many nodes of the cluster, this one first, written "
                 "synchronously: a write is acknowledged once every in-sync copy has it "
                 "(with --durability async: once the primary has it, the others within the "
                 "primary's lag bounds) (spd2 --cluster --replication-listen on each; `spdctl "
                 "replica list` shows them). 1: this node alone")
      ->check(CLI::Range(1, 9))
      ->capture_default_str();
  vc->callback([&] {
    uint64_t size;
    if (!SizeArg("--size", size_text, &size, &rc)) return;
    v1::CreateVolumeRequest req;
    req.set_name(name);
    req.set_size_bytes(size);
    req.set_durability(ParseDurabilityFlag(durability));
    req.set_read_only(read_only);
    req.set_replicas(static_cast<uint32_t>(replicas));
    v1::Volume resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->CreateVolume(&ctx, req, &resp);
    rc = s.ok() ? C().Print(VolumeDoc(resp)) : C().Fail(s);
  });

  CLI::App* vg = vol->add_subcommand(
      "get",
      "Show one volume: size, allocation, durability, users; with the QoS scheduler its "
      "intent's status (INTENT:); a replicated volume's copy also its set as `replica list` "
      "shows it (REPLICATION: durability, copies, primary and epoch, each copy's state)");
  vg->add_option("name", name, "Volume name")->required();
  vg->callback([&] {
    v1::GetVolumeRequest req;
    req.set_name(name);
    v1::Volume resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->GetVolume(&ctx, req, &resp);
    rc = s.ok() ? C().Print(VolumeDoc(resp)) : C().Fail(s);
  });

  CLI::App* vl = vol->add_subcommand(
      "list",
      "List every volume (all pages); when one is replicated, a REPLICATION column: its "
      "durability, copies (how many not in sync), primary; '-' for a local volume");
  vl->callback([&] {
    std::vector<v1::Volume> all;
    std::string token;
    for (int page = 0; page < 100000; ++page) {
      v1::ListVolumesRequest req;
      req.set_page_token(token);
      v1::ListVolumesResponse resp;
      grpc::ClientContext ctx;
      C().Prepare(&ctx);
      grpc::Status s = C().volumes->ListVolumes(&ctx, req, &resp);
      if (!s.ok()) {
        rc = C().Fail(s);
        return;
      }
      for (const auto& v : resp.volumes()) all.push_back(v);
      token = resp.next_page_token();
      if (token.empty()) break;
    }
    rc = C().Print(VolumeListDoc(all));
  });

  CLI::App* vd = vol->add_subcommand(
      "delete",
      "Delete a volume and its data (refused while in use unless --force). A replicated volume "
      "(spd2 --cluster) is deleted on every node that holds a copy; without --force it is "
      "refused unless asked of its primary (spdctl replica list)");
  vd->add_option("name", name, "Volume name")->required();
  vd->add_flag("--force", force,
               "Close the volume's connections first (on every node, for a replicated volume), "
               "then delete");
  vd->callback([&] {
    v1::DeleteVolumeRequest req;
    req.set_name(name);
    req.set_force(force);
    v1::DeleteVolumeResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->DeleteVolume(&ctx, req, &resp);
    if (!s.ok()) {
      rc = C().Fail(s);
      return;
    }
    rc = C().Print(DeletedDoc(name));
  });

  CLI::App* vr = vol->add_subcommand(
      "resize",
      "Grow or shrink a volume (shrinking is refused while data lies beyond the end). A "
      "replicated volume (spd2 --cluster) grows on every copy, asked of any node: the primary's "
      "replicas first, then the primary itself; it cannot shrink. Connected NBD clients keep the "
      "size they negotiated: reconnect to see the new one");
  vr->add_option("name", name, "Volume name")->required();
  vr->add_option("--size", size_text, "New size: bytes or with K, M, G, T")->required();
  vr->callback([&] {
    uint64_t size;
    if (!SizeArg("--size", size_text, &size, &rc)) return;
    v1::ResizeVolumeRequest req;
    req.set_name(name);
    req.set_size_bytes(size);
    v1::Volume resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->ResizeVolume(&ctx, req, &resp);
    rc = s.ok() ? C().Print(VolumeDoc(resp)) : C().Fail(s);
  });

  CLI::App* vs = vol->add_subcommand(
      "set-durability",
      "Change when a volume's writes are durable. A replicated volume's copies all change (asked "
      "of any node). `async` makes a replicated volume asynchronous (its primary completes "
      "writes ahead of their acks; its copies keep flush); flush, sync or none make an "
      "asynchronous one synchronous again, once its primary's lag is drained (the call waits "
      "for that, 15 s at most). Exit 8 for async on a local volume");
  vs->add_option("name", name, "Volume name")->required();
  vs->add_option("durability", durability, "flush, sync, none, or async (replicated volumes)")
      ->required()
      ->check(CLI::IsMember({"flush", "sync", "none", "async"}));
  vs->callback([&] {
    v1::SetDurabilityRequest req;
    req.set_name(name);
    req.set_durability(ParseDurabilityFlag(durability));
    v1::Volume resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->SetDurability(&ctx, req, &resp);
    rc = s.ok() ? C().Print(VolumeDoc(resp)) : C().Fail(s);
  });

  int set_replicas = 0;
  CLI::App* vsr = vol->add_subcommand(
      "set-replicas",
      "Change how many copies a replicated volume has (asked of any node; admins). More: new "
      "copies on the nodes holding the fewest, each copied whole from the primary while it "
      "serves (allocated space only) and counted once in sync (`spdctl replica list` shows the "
      "progress). Fewer: copies other than the primary's leave at once, those out of sync "
      "first, then the last placed, and delete themselves (now, or when their node is back). "
      "Asked of the node that holds a local volume of that name: makes it replicated while "
      "it serves, that node its primary (its clients' writes go on), the new copies copied "
      "whole from it. Prints the copies. Refused (exit 5) when fewer nodes serve replicas "
      "than asked, the volume has no primary, a local one is read-only, or a move or "
      "hand-over of it is under way; exit 3 for no such volume; exit 8 for a count outside "
      "2..9; exit 10 when its record changed meanwhile (ask again)");
  vsr->add_option("name", name, "Volume name")->required();
  vsr->add_option("replicas", set_replicas, "The number of copies, 2..9")->required();
  std::vector<std::string> remove_nodes;
  vsr->add_option("--remove", remove_nodes,
                  "With fewer copies: the node whose copy leaves first (repeat it for more; "
                  "it holds a copy and is not the primary: `spdctl replica demote` first), e.g. "
                  "a node being retired");
  vsr->callback([&] {
    v1::SetReplicasRequest req;
    req.set_volume(name);
    req.set_replicas(static_cast<uint32_t>(set_replicas < 0 ? 0 : set_replicas));
    for (const std::string& n : remove_nodes) req.add_remove(n);
    v1::ListReplicasResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->SetReplicas(&ctx, req, &resp);
    rc = s.ok() ? C().Print(ReplicaListDoc(resp)) : C().Fail(s);
  });

  // ---- pool ----
  CLI::App* pool = app.add_subcommand("pool", "Inspect pools (one per daemon)");
  pool->require_subcommand(1);
  CLI::App* pl = pool->add_subcommand("list", "List pools: size, allocated and free space");
  pl->callback([&] {
    v1::ListPoolsResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().pools->ListPools(&ctx, v1::ListPoolsRequest(), &resp);
    if (!s.ok()) {
      rc = C().Fail(s);
      return;
    }
    rc = C().Print(PoolListDoc({resp.pools().begin(), resp.pools().end()}));
  });
  std::string pool_name;
  CLI::App* pg = pool->add_subcommand("get", "Show one pool");
  pg->add_option("name", pool_name, "Pool name (default: the daemon's pool)");
  pg->callback([&] {
    v1::GetPoolRequest req;
    req.set_name(pool_name);
    v1::Pool resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().pools->GetPool(&ctx, req, &resp);
    rc = s.ok() ? C().Print(PoolDoc(resp)) : C().Fail(s);
  });

  // ---- replica ----
  CLI::App* rep = app.add_subcommand("replica", "Replicated volumes and their copies");
  rep->require_subcommand(1);
  std::string rep_volume;
  CLI::App* rl = rep->add_subcommand(
      "list",
      "Every replicated volume (or one): placement, primary and its epoch, and each copy's "
      "state (in_sync, out_of_sync) as the cluster records it; on the primary also what its "
      "link to each copy has acknowledged");
  rl->add_option("volume", rep_volume, "Only this volume");
  rl->callback([&] {
    v1::ListReplicasRequest req;
    req.set_volume(rep_volume);
    v1::ListReplicasResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->ListReplicas(&ctx, req, &resp);
    rc = s.ok() ? C().Print(ReplicaListDoc(resp)) : C().Fail(s);
  });

  std::vector<std::string> promote_without;
  CLI::App* rp = rep->add_subcommand(
      "promote",
      "Make the node spdctl talks to (--socket) the volume's primary. Only an in-sync copy may "
      "be promoted; the current primary hands the volume over (writes in flight there fail, and "
      "its clients must reconnect to this node). Waits until done (15 s at most). With "
      "--without: see there");
  rp->add_option("volume", rep_volume, "The volume")->required();
  rp->add_option("--without", promote_without,
                 "A recovered volume only (etcd lost its data, and its election waits for every "
                 "placed copy to stand): go on without the copy on NODE, which has not stood "
                 "(repeatable). The best of the other copies takes the volume, this one or "
                 "another; what only NODE's copy held is lost, and NODE's copy is resynced from "
                 "the new primary if it returns. Refused for a copy that stands (exit 5), a node "
                 "with no copy (exit 3), a volume with a primary or with recorded states (exit "
                 "5), this node's own copy (exit 8)")
      ->type_name("NODE")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  rp->callback([&] {
    v1::PromoteReplicaRequest req;
    req.set_volume(rep_volume);
    for (const std::string& n : promote_without) req.add_without(n);
    v1::ListReplicasResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->PromoteReplica(&ctx, req, &resp);
    rc = s.ok() ? C().Print(ReplicaListDoc(resp)) : C().Fail(s);
  });

  std::string demote_to;
  CLI::App* rd = rep->add_subcommand(
      "demote",
      "Asked of the volume's primary (--socket): hand the volume over to another copy that is in "
      "sync (--to NODE, or the first one). Writes in flight here fail, and the clients must "
      "reconnect to the new primary. Refused on a node that is not the primary (exit 5), for a "
      "node with no copy (exit 3), and when the target, or every other copy, is out of sync "
      "(exit 5). Waits until done (15 s at most)");
  rd->add_option("volume", rep_volume, "The volume")->required();
  rd->add_option("--to", demote_to, "The node to take the volume (default: the first in sync)");
  rd->callback([&] {
    v1::DemoteReplicaRequest req;
    req.set_volume(rep_volume);
    req.set_to(demote_to);
    v1::ListReplicasResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->DemoteReplica(&ctx, req, &resp);
    rc = s.ok() ? C().Print(ReplicaListDoc(resp)) : C().Fail(s);
  });

  std::string move_from, move_to;
  bool move_cancel = false;
  CLI::App* rm = rep->add_subcommand(
      "move",
      "Move a volume's copy from one node to another (asked of any node; admins), e.g. to "
      "replace a node that is gone for good or to retire one. --to joins the placement recorded "
      "in etcd, out of sync, and the primary copies the volume to it (allocated space only, "
      "resumable, as the QoS rebuild class with --qos on), then marks it in sync (watch "
      "`spdctl replica list VOLUME`). A --from in sync keeps counting until then and leaves "
      "after (a live move: the volume never has a copy in sync fewer); one out of sync (down) "
      "leaves at once. Once it left, --from deletes its copy (now, or when it is back), and a "
      "delete of the volume does not wait for it. Answers once the change is recorded. "
      "Refused: no such volume, --from holds no copy, --to is not a node of the cluster (exit "
      "3); --to holds a copy or serves no replicas, the volume has no primary, --from is its "
      "primary (demote it first), another move of it is under way, or it is being deleted "
      "(exit 5); --from and --to the same (exit 8); the volume's record changed meanwhile "
      "(ABORTED, exit 10: ask again). With --cancel, the live move under way is called off "
      "instead (e.g. its new node is down): the new copy leaves the placement and deletes "
      "itself (now, or when its node is back), the old one stays and counts as before; "
      "refused (exit 5) when no move is under way, --from or --to name another, the new copy "
      "is the primary, or it is in sync and the old one is not (the move is finishing)");
  rm->add_option("volume", rep_volume, "The volume")->required();
  rm->add_option("--from", move_from, "The node whose copy moves (needed without --cancel)");
  rm->add_option("--to", move_to,
                 "The node to hold the new copy (`spdctl node list`; needed without --cancel)");
  rm->add_flag("--cancel", move_cancel,
               "Call off the live move under way (--from and --to, if given, must name it)");
  rm->callback([&] {
    if (!move_cancel && (move_from.empty() || move_to.empty())) {
      std::fprintf(stderr, "spdctl: replica move: --from and --to are needed (or --cancel)\n");
      rc = kExitUsage;
      return;
    }
    v1::MoveReplicaRequest req;
    req.set_volume(rep_volume);
    req.set_from(move_from);
    req.set_to(move_to);
    req.set_cancel(move_cancel);
    v1::ListReplicasResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().volumes->MoveReplica(&ctx, req, &resp);
    rc = s.ok() ? C().Print(ReplicaListDoc(resp)) : C().Fail(s);
  });

  // ---- node ----
  CLI::App* node = app.add_subcommand("node", "This daemon and its host");
  node->require_subcommand(1);
  node->add_subcommand("info", "Version, uptime, reactors, engine, endpoints")->callback([&] {
    v1::NodeInfo resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx);
    grpc::Status s = C().node->GetNodeInfo(&ctx, v1::GetNodeInfoRequest(), &resp);
    rc = s.ok() ? C().Print(NodeDoc(resp)) : C().Fail(s);
  });
  node->add_subcommand("list",
                       "The cluster's nodes, as this node's copy of etcd's list has them (spd2 "
                       "--cluster only): name, host, pid, version, NBD endpoints")
      ->callback([&] {
        v1::ListClusterNodesResponse resp;
        grpc::ClientContext ctx;
        C().Prepare(&ctx);
        grpc::Status s = C().node->ListClusterNodes(&ctx, v1::ListClusterNodesRequest(), &resp);
        rc = s.ok() ? C().Print(ClusterNodeListDoc(resp)) : C().Fail(s);
      });

  // ---- calibrate ----
  double cal_seconds = 15;
  std::string cal_ws = "256M";
  CLI::App* cal = app.add_subcommand(
      "calibrate",
      "Measure the pool's device (a scratch volume is created, written, read and deleted) and fit "
      "the cost model the QoS scheduler charges requests by; it is stored as "
      "DATA_DIR/default.cost.json and applied at once (docs/qos.md). Admins only. Other volumes' "
      "I/O meanwhile is measured too: run it on an idle daemon");
  cal->add_option("--seconds", cal_seconds, "The measurement at most, 1-300 seconds")
      ->check(CLI::Range(1.0, 300.0))
      ->capture_default_str();
  cal->add_option("--working-set", cal_ws,
                  "The scratch volume's size, which I/Os spread over (16M-64G); larger than the "
                  "device's cache for figures of the media")
      ->capture_default_str();
  cal->callback([&] {
    uint64_t ws;
    if (!SizeArg("--working-set", cal_ws, &ws, &rc)) return;
    v1::CalibrateRequest req;
    req.set_seconds_max(cal_seconds);
    req.set_working_set_bytes(ws);
    v1::CalibrateResponse resp;
    grpc::ClientContext ctx;
    C().Prepare(&ctx, false);
    // The measurement, then the scratch volume's create and delete.
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(static_cast<int64_t>(cal_seconds) + 120));
    grpc::Status s = C().node->Calibrate(&ctx, req, &resp);
    rc = s.ok() ? C().Print(CalibrationDoc(resp)) : C().Fail(s);
  });

  // ---- events ----
  uint64_t since = 0, count = 0;
  CLI::App* ev = app.add_subcommand(
      "events", "Follow the daemon's events (volume created, deleted, resized, pool read-only...)");
  ev->add_option("--since", since,
                 "Start with event number SEQ (the daemon keeps its last 1024); default: only new "
                 "events");
  ev->add_option("--count", count, "Stop after this many events (default: follow until ^C)");
  ev->callback([&] {
    v1::WatchEventsRequest req;
    req.set_since_seq(since);
    grpc::ClientContext ctx;
    C().Prepare(&ctx, false);
    auto reader = C().events->WatchEvents(&ctx, req);
    v1::Event e;
    uint64_t n = 0;
    while ((count == 0 || n < count) && reader->Read(&e)) {
      ++n;
      const Doc d = EventDoc(e);
      // One document per event: compact JSON lines, YAML documents.
      if (C().output() == Output::kJson) {
        std::printf("%s\n", d.dump().c_str());
      } else if (C().output() == Output::kYaml) {
        std::printf("---\n%s", ToYaml(d).c_str());
      } else {
        std::fputs(Render(d, Output::kTable).c_str(), stdout);
      }
      std::fflush(stdout);
    }
    if (count != 0 && n >= count) {
      ctx.TryCancel();
      rc = kExitOk;
      return;
    }
    grpc::Status s = reader->Finish();
    rc = s.ok() ? kExitOk : C().Fail(s);
  });

  // ---- audit ----
  CLI::App* aud = app.add_subcommand("audit", "The audit log of mutating calls (docs/audit.md)");
  aud->require_subcommand(1);
  aud->add_subcommand("head",
                      "The log's last entry number and hash: keep it elsewhere, pass it "
                      "to `audit verify --anchor` later")
      ->callback([&] {
        v1::AuditHead resp;
        grpc::ClientContext ctx;
        C().Prepare(&ctx);
        grpc::Status s = C().audit->GetAuditHead(&ctx, v1::GetAuditHeadRequest(), &resp);
        if (!s.ok()) {
          rc = C().Fail(s);
          return;
        }
        rc = C().Print(AuditHeadDoc(resp));
      });
  std::string anchor_text, audit_dir;
  CLI::App* av = aud->add_subcommand(
      "verify",
      "Check the whole chain: every entry intact, in order, none missing or inserted, and the "
      "head file matching. Exits 1 naming the first bad entry");
  av->add_option("--anchor", anchor_text,
                 "SEQ:HASH from an earlier `audit head`: the log must still hold that entry");
  av->add_option("--dir", audit_dir,
                 "Check the files in this directory directly (DATA_DIR/audit), without the daemon "
                 "(it must not be running on them)");
  av->callback([&] {
    std::optional<AuditHead> anchor;
    if (!anchor_text.empty()) {
      const size_t colon = anchor_text.find(':');
      AuditHead h;
      bool parsed = colon != std::string::npos && anchor_text.size() == colon + 65;
      try {
        if (parsed) h.seq = std::stoull(anchor_text.substr(0, colon));
      } catch (...) {
        parsed = false;
      }
      if (!parsed) {
        std::fprintf(stderr,
                     "spdctl: --anchor wants SEQ:HASH (64 hex digits), as `spdctl audit "
                     "head` prints it\n");
        rc = kExitUsage;
        return;
      }
      h.hash = anchor_text.substr(colon + 1);
      anchor = h;
    }
    bool ok = false;
    uint64_t entries = 0, bad = 0;
    std::string problem;
    if (!audit_dir.empty()) {
      auto r = VerifyAuditLog(audit_dir, anchor ? &*anchor : nullptr);
      if (!r.ok()) {
        std::fprintf(stderr, "spdctl: %s\n", r.status().ToString().c_str());
        rc = kExitError;
        return;
      }
      ok = r.value().ok;
      entries = r.value().entries;
      bad = r.value().bad_entry;
      problem = r.value().problem;
    } else {
      v1::VerifyAuditRequest req;
      if (anchor) {
        req.mutable_anchor()->set_seq(anchor->seq);
        req.mutable_anchor()->set_hash(anchor->hash);
      }
      v1::VerifyAuditResponse resp;
      grpc::ClientContext ctx;
      C().Prepare(&ctx);
      grpc::Status s = C().audit->VerifyAudit(&ctx, req, &resp);
      if (!s.ok()) {
        rc = C().Fail(s);
        return;
      }
      ok = resp.ok();
      entries = resp.entries();
      bad = resp.bad_entry();
      problem = resp.problem();
    }
    C().Print(AuditVerificationDoc(ok, entries, bad, problem));
    rc = ok ? kExitOk : kExitDrift;
  });

  AddPolicyCommands(&app, std::function<Client&()>(C), &rc);

  // ---- completion, version ----
  std::string shell;
  CLI::App* comp = app.add_subcommand(
      "completion", "Print a shell completion script: `source <(spdctl completion bash)`");
  comp->add_option("shell", shell, "bash")->required()->check(CLI::IsMember({"bash"}));
  comp->callback([&] { std::fputs(kBashCompletion, stdout); });
  app.add_subcommand("version", "Print spdctl's version and API version")->callback([&] {
    std::printf("spdctl 0.1.0 (API %s)\n", kApiVersion);
  });

  // Global options (-o, --socket, --timeout) are accepted after the command words too.
  std::function<void(CLI::App*)> fall = [&](CLI::App* a) {
    for (CLI::App* sub : a->get_subcommands({})) {
      sub->fallthrough();
      fall(sub);
    }
  };
  fall(&app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  return rc;
}

}  // namespace
}  // namespace spd::ctl

int main(int argc, char** argv) { return spd::ctl::Main(argc, argv); }
