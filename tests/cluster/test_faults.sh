#!/usr/bin/env bash
# spd-it: alone (an etcd cluster, network namespaces, lease timing)
# The replication fault matrix (tests/cluster/faults.sh has the rows and the checks): three spd2
# nodes in network namespaces and a 3-member etcd; every round writes through the primary,
# injects a fault, and checks that no acknowledged write was lost, no block regressed and no
# stale copy was promoted, then that every copy comes back in sync and complete.
#
#   bash tests/cluster/test_faults.sh                       the CI selection, one round each
#   FAULT_ROWS="isolate_replica oneway" FAULT_ROUNDS=50 FAULT_SEED=100 bash tests/cluster/test_faults.sh
#   FAULT_ROWS=all FAULT_ROUNDS=50 ...                      the long mode: every row, 50 rounds
# A failure names the row, the round and its seed; the same seed replays the same choices
# (where to cut, the injected losses), not the same timing.
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/netns.sh"
. "$(dirname "$0")/faults.sh"
. "$(dirname "$0")/faults_power.sh"
. "$(dirname "$0")/faults_convert.sh"
. "$(dirname "$0")/faults_storage.sh"

ALL_ROWS="kill9_primary isolate_primary cut_primary_etcd isolate_replica oneway sigstop_primary
rejoin_clean kill_all promote_cycles etcd_leader etcd_all_down etcd_lost kill_resync_target
kill_new_primary_mid_resync last_standing flap_resync enospc_replica enospc_primary io_errors_replica io_errors_primary rtt_0
recount_kill_primary convert_kill_primary rtt_500 rtt_2000 rtt_10000 powercut_all powercut_replica
powercut_primary"
CI_ROWS="kill9_primary isolate_primary isolate_replica sigstop_primary rejoin_clean promote_cycles
kill_new_primary_mid_resync enospc_replica enospc_primary io_errors_replica io_errors_primary rtt_2000
etcd_lost powercut_all powercut_primary recount_kill_primary convert_kill_primary"
# Under the ASan daemon (about twice as slow) three rows keep the test within its 300 s.
if sanitizer_build; then CI_ROWS="kill9_primary isolate_primary promote_cycles"; fi
# The CI selection writes for 12 s around each fault (the long mode 20 s): every row's fault
# (an ack timeout of 5 s, a lease of 3 s, etcd down for 5 s) lies well inside it.
[ -n "${FAULT_ROWS:-}" ] || FAULT_WRITE_SECONDS=${FAULT_WRITE_SECONDS:-12}
FAULT_ROWS=${FAULT_ROWS:-$CI_ROWS}
[ "$FAULT_ROWS" != all ] || FAULT_ROWS=$ALL_ROWS
FAULT_ROUNDS=${FAULT_ROUNDS:-1}
FAULT_SEED=${FAULT_SEED:-1}
for row in $FAULT_ROWS; do
  case " $(echo $ALL_ROWS) " in
    *" $row "*) ;;
    *) fail "unknown row '$row' (rows: $(echo $ALL_ROWS))" ;;
  esac
done

cluster_net_up 3 || fail "cannot set up the namespaces"
etcd_cluster_up || fail "cannot start etcd"
rounds=0
for row in $FAULT_ROWS; do
  for round in $(seq "$FAULT_ROUNDS"); do
    run_row "$row" "$round"
    rounds=$((rounds + 1))
  done
done
echo "faults: OK ($rounds rounds: $(echo $FAULT_ROWS) x $FAULT_ROUNDS; 0 acknowledged writes lost, 0 stale promotions)"
