# A conversion for the replication fault matrix (sourced by tests/cluster/test_faults.sh after
# faults.sh, whose helpers it uses):
#   convert_kill_primary  a local volume lv of node K (the round's primary), written whole, is
#                    made 3-way (`spdctl volume set-replicas lv 3` on K; docs/replication.md,
#                    "Making a local volume replicated") and K is killed with -9 under writes
#                    while it copies lv to the two new copies (an injected 20 ms round trip
#                    makes the copy last): neither new copy may take lv (each lacks acknowledged
#                    writes) unless K's log shows it in sync before the kill; K, back, takes lv
#                    again with every acknowledged write and copies it to the others, which then
#                    hold them all.

row_convert_kill_primary() {
  local k=$P old_fvol=${FVOL:-} v n other=""
  FVOL=lv
  BCSTATE="$T/bc_lv.json"
  rm -f "$BCSTATE"
  ctl "$k" volume create lv --size 64M
  bc_write "$k" $((SEED + 700)) 2000 --blocks 16384 >"$T/w0c.log" 2>&1 ||
    { cat "$T/w0c.log" >&2; fail "$ROUND_LOG: writes to the local lv"; }
  ctl "$k" volume set-replicas lv 3
  v=$(view "$k") || fail "$ROUND_LOG: node n$k does not answer"
  [[ "$v" == "n$k "* ]] || fail "$ROUND_LOG: n$k is not lv's primary once converted: $v"
  [[ "$v" == *"n$k=in_sync"* ]] || fail "$ROUND_LOG: n$k's copy of lv not in sync: $v"
  kill_under_writes "$k" "$SEED" $((300 + RANDOM % 1500)) "$T/w1.log"
  # The lease ends (FAULT_TTL); then a while for a wrong election to show.
  sleep $((FAULT_TTL + 4))
  for n in 1 2 3; do
    [ "$n" != "$k" ] || continue
    v=$(view "$n") || fail "$ROUND_LOG: node n$n does not answer"
    case "$v" in
      "- "*) ;;
      "n$n "*) other=$n ;;
      *) fail "$ROUND_LOG: lv's primary after n$k's kill, as n$n sees it: $v" ;;
    esac
  done
  if [ -n "$other" ]; then
    # Only a copy that became in sync before the kill may take lv, with every write.
    round_log "$k" | grep -q "volume lv: replica n$other resynced .*; in sync" ||
      fail "$ROUND_LOG: n$other took lv without having been in sync"
    bc_verify "$other" "lv's new primary"
  fi
  start_node "$k"
  back() { primary_is_known "$k" && [ "$P" = "${other:-$k}" ]; }
  wait_until "$ROUND_LOG: lv's primary n${other:-$k} after n$k's return" $((FAULT_TTL + 20)) back
  bc_verify "$P" "lv's primary after n$k's return"
  wait_until "$ROUND_LOG: every copy of lv in sync" 90 all_in_sync "$P"
  for n in 1 2 3; do bc_verify "$n" "a copy of lv"; done
  FVOL=$old_fvol
  BCSTATE=""
}
