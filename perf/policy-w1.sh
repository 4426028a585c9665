#!/bin/bash
# W1-like check: one 4 GiB file pushed between two local daemons, policy allow without a rate cap vs
# with a cap far above the link (the per-chunk pace runs but never waits). 3 runs each.
set -e
B=${BUILD:-$(cd "$(dirname "$0")/.." && pwd)/build/release}; CLI=$B/cli/pororoca; D=$B/daemon/pororocad
W=/dev/shm/w1p; rm -rf $W; mkdir -p $W
$CLI federation init --dir $W/fed --name w1p >/dev/null
$CLI federation add-institution ia --dir $W/fed >/dev/null; $CLI federation add-institution ib --dir $W/fed >/dev/null
$CLI federation add-endpoint a --dir $W/fed --institution ia --address 127.0.0.1:47801 >/dev/null
$CLI federation add-endpoint b --dir $W/fed --institution ib --address 127.0.0.1:47802 >/dev/null
$CLI federation add-issuer https://t.ia --dir $W/fed --institution ia --key-out $W/issuer-ia.key >/dev/null
for n in a b; do
  p=$([ $n = a ] && echo 47801 || echo 47802); mkdir -p $W/$n/export $W/$n/state
  cat > $W/$n.toml <<T
[endpoint]
name = "$n"
[network]
listen = "127.0.0.1:$p"
[api]
socket = "$W/$n.sock"
[storage]
export_root = "$W/$n/export"
state_dir = "$W/$n/state"
[tls]
ca = "$W/fed/ca.crt"
cert = "$W/fed/endpoints/$n.crt"
key = "$W/fed/endpoints/$n.key"
[federation]
manifest = "$W/manifest.json"
authority_key = "$W/fed/authority.pub"
refresh_s = 1
[tokens]
issuer = "https://t.ia"
key = "$W/issuer-ia.key"
[[users]]
uid = 0
identity = "root@ia"
T
done
$CLI federation policy set --dir $W/fed --rules '[{"id":"all","effect":"allow"}]' >/dev/null
$CLI federation sign --dir $W/fed --publish $W/manifest.json >/dev/null
$D --config $W/a.toml > $W/a.log 2>&1 & PA=$!
$D --config $W/b.toml > $W/b.log 2>&1 & PB=$!
trap "kill $PA $PB 2>/dev/null; rm -rf $W" EXIT
sleep 2
head -c 4G /dev/urandom > $W/a/export/big.bin 2>/dev/null || dd if=/dev/urandom of=$W/a/export/big.bin bs=1M count=4096 status=none
for mode in nocap cap; do
  if [ $mode = cap ]; then
    $CLI federation policy set --dir $W/fed --rules '[{"id":"all","effect":"allow","rate_limit":"100Gbit/s"}]' >/dev/null
    $CLI federation sign --dir $W/fed --publish $W/manifest.json >/dev/null; sleep 2
  fi
  for i in 1 2 3; do
    rm -f $W/b/export/big.bin
    s=$(date +%s.%N); PORO_SOCKET=$W/a.sock $CLI cp --no-progress $W/a/export/big.bin b:/big.bin >/dev/null; e=$(date +%s.%N)
    echo "$mode run $i: $(echo "scale=2; 4096/($e-$s)" | bc) MiB/s ($(echo "$e-$s" | bc) s)"
  done
done
