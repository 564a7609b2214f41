// VolumeService's replicated-volume calls (control_server.cc hands them over).
#pragma once

#include "control/control_internal.h"
#include "spd/v1/volumes.grpc.pb.h"

namespace spd {

// CreateVolume with replicas > 1: placed and recorded in etcd on a thread of its own (blocking,
// bounded by etcd's timeouts). A tenant caller's volume is its tenant's (on this node) from the
// start, as a local one (`placed`: Impl::PlaceNewVolume placed it). REQUIRES: admitted
// (in_flight counted), `audit` described.
grpc::ServerUnaryReactor* CreateReplicatedVolume(ControlServer::Impl* impl,
                                                 grpc::CallbackServerContext* ctx,
                                                 const v1::CreateVolumeRequest* req,
                                                 v1::Volume* resp, AuditCall audit,
                                                 const Caller& caller, bool placed);
// Whether `volume` is a replicated volume (ReplicationManager::Replicated); false without one.
bool IsReplicated(const ControlServer::Impl& impl, const std::string& volume);
// Whether the cluster's record holds a replicated volume `volume` (whatever this node holds).
bool InCluster(const ControlServer::Impl& impl, const std::string& volume);
// GetVolume: a replicated volume's set (Volume.replication) as ListReplicas answers it; nothing
// for a local volume (one of a replicated volume's name too) or one the record does not hold.
void FillReplication(const ControlServer::Impl& impl, const std::string& volume, v1::Volume* out);
// ListVolumes: the same for each replicated volume of the page (the record read once).
void FillReplication(const ControlServer::Impl& impl, v1::ListVolumesResponse* out);
// DeleteVolume of a replicated volume: deleted on every node (ReplicationManager::Delete).
// REQUIRES: admitted (in_flight counted), visible to the caller, `audit` described, a
// ReplicationManager.
grpc::ServerUnaryReactor* DeleteReplicatedVolume(ControlServer::Impl* impl,
                                                 grpc::CallbackServerContext* ctx,
                                                 const v1::DeleteVolumeRequest* req,
                                                 AuditCall audit);
// Runs `call` (a change of a replicated volume asked from elsewhere: a volume policy's effective
// durability or replica count) on the replication calls' thread; `done` gets its outcome there
// (RESOURCE_EXHAUSTED when too many such calls wait).
void RunReplicationCall(ControlServer::Impl* impl, std::function<Status(ReplicationManager*)> call,
                        std::function<void(Status)> done);
// SetDurability of a replicated volume: on every copy (ReplicationManager::SetDurability);
// answered with the copy here. REQUIRES: as DeleteReplicatedVolume.
grpc::ServerUnaryReactor* SetReplicatedDurability(ControlServer::Impl* impl,
                                                  grpc::CallbackServerContext* ctx,
                                                  const v1::SetDurabilityRequest* req,
                                                  Durability durability, v1::Volume* resp,
                                                  AuditCall audit);
// ResizeVolume of a replicated volume: grown on every copy (ReplicationManager::Resize);
// answered with the copy here. REQUIRES: as DeleteReplicatedVolume.
grpc::ServerUnaryReactor* ResizeReplicatedVolume(ControlServer::Impl* impl,
                                                 grpc::CallbackServerContext* ctx,
                                                 const v1::ResizeVolumeRequest* req,
                                                 v1::Volume* resp, AuditCall audit);
// A tenant caller sees only its own tenant's replicated volumes (another's: NOT_FOUND).
grpc::ServerUnaryReactor* ListReplicatedVolumes(ControlServer::Impl* impl,
                                                grpc::CallbackServerContext* ctx,
                                                const v1::ListReplicasRequest* req,
                                                v1::ListReplicasResponse* resp);

grpc::ServerUnaryReactor* PromoteReplicaVolume(ControlServer::Impl* impl,
                                               grpc::CallbackServerContext* ctx,
                                               const v1::PromoteReplicaRequest* req,
                                               v1::ListReplicasResponse* resp);
grpc::ServerUnaryReactor* DemoteReplicaVolume(ControlServer::Impl* impl,
                                              grpc::CallbackServerContext* ctx,
                                              const v1::DemoteReplicaRequest* req,
                                              v1::ListReplicasResponse* resp);
grpc::ServerUnaryReactor* MoveReplicaVolume(ControlServer::Impl* impl,
                                            grpc::CallbackServerContext* ctx,
                                            const v1::MoveReplicaRequest* req,
                                            v1::ListReplicasResponse* resp);
grpc::ServerUnaryReactor* SetReplicasVolume(ControlServer::Impl* impl,
                                            grpc::CallbackServerContext* ctx,
                                            const v1::SetReplicasRequest* req,
                                            v1::ListReplicasResponse* resp);

}  // namespace spd
