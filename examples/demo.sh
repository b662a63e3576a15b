#!/usr/bin/env bash
# The user story "push a config to a fleet", end to end on this machine (as root):
# three simulated hosts (web1, web2, db1), each a network namespace with its own /nix
# (an empty store) running hostctl-agent, get the example fleet with `hostctl apply`;
# then one host's configuration changes and `apply` pushes only that host.
#
# A simulated host is built like the test harness's (tests/src/simhost.rs), with names
# and addresses of its own so that it cannot collide with running tests: netns
# `hostctl-demo-<n>`, veth `hdemo<n>a` (here) / `hdemo<n>b` (inside), 198.51.100.4k/30
# for slot k = 60 + n (here .4k+1, the host .4k+2). An existing netns is an error, never
# deleted. Everything this script created is removed at exit, also on Ctrl-C or failure.
#
# `demo.sh --keep`: at the end the hosts keep running and the script prints commands to
# try on them (status, history, diff, rollback) from another shell; it removes everything
# when Enter is pressed here (or on Ctrl-C, or `kill PID`, which it also prints).
set -euo pipefail
keep=0
case "${1:-}" in
  --keep) keep=1 ;;
  "") ;;
  *) echo "usage: demo.sh [--keep]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh: needs root (network and mount namespaces)" >&2
  exit 1
fi

names=(web1 web2 db1)
first_slot=60
port=7420
fallback_metric=4243

# What this run created, for cleanup: only these are ever removed.
work=""             # temp dir: fleet repo + signing key
host_roots=()       # per host: ROOT temp dir
netns_made=()       # netns names we added
veth_made=()        # root-side veth names we added (deleting one end deletes the pair)
routes_made=()      # fallback routes we added (subnets)
agent_pids=()       # agents we started

cleanup() {
  local status=$?
  # Only the script itself cleans up, not a subshell of it that inherited the trap.
  if [ "$BASHPID" != "$$" ]; then return "$status"; fi
  trap - EXIT
  trap '' INT TERM   # finish cleaning up even on a second Ctrl-C
  set +e
  echo "--- cleaning up ---" >&2
  if [ "$status" != 0 ] && [ "$status" != 130 ] && [ "$status" != 143 ]; then   # failed, not interrupted
    for r in "${host_roots[@]}"; do
      if [ -s "$r/agent.log" ]; then
        echo "--- last lines of $r/agent.log ---" >&2
        tail -n 20 "$r/agent.log" >&2
      fi
    done
  fi
  local pid i me
  me=$(cat /proc/$$/comm)
  for pid in "${agent_pids[@]}"; do
    # A child just forked may still be this script (with its traps) rather than the agent.
    for ((i = 0; i < 50; i++)); do
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$me" ] || break
      sleep 0.1
    done
    kill -s TERM "$pid" 2>/dev/null
  done
  for pid in "${agent_pids[@]}"; do
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -s KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  local ns pids
  for ns in "${netns_made[@]}"; do
    # What the agents left behind (activations run detached by design).
    for ((i = 0; i < 50; i++)); do
      pids=$(ip netns pids "$ns" 2>/dev/null)
      [ -z "$pids" ] && break
      # shellcheck disable=SC2086  # a list of pids
      kill -s KILL $pids 2>/dev/null
      sleep 0.1
    done
    [ -n "$pids" ] && echo "warning: processes survive in netns $ns: $pids" >&2
  done
  local subnet veth
  for subnet in "${routes_made[@]}"; do
    ip route del unreachable "$subnet" metric "$fallback_metric" || echo "warning: route $subnet" >&2
  done
  for veth in "${veth_made[@]}"; do
    ip link del "$veth" || echo "warning: cannot delete veth $veth" >&2
  done
  for ns in "${netns_made[@]}"; do
    ip netns del "$ns" || echo "warning: cannot delete netns $ns" >&2
  done
  local dir mp
  for dir in "${host_roots[@]}" "$work"; do
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then continue; fi
    # The /nix bind mounts lived only in the agents' private mount namespaces; a safety net.
    while read -r mp; do
      echo "warning: unmounting $mp, which leaked into this mount namespace" >&2
      umount --lazy "$mp"
    done < <(awk -v d="$dir" 'index($2, d "/") == 1 {print $2}' /proc/self/mounts)
    chmod -R u+w "$dir"   # store paths are read-only
    rm -rf "$dir"
  done
  exit "$status"
}
trap cleanup EXIT
# Ctrl-C or TERM exits (-> cleanup), except between creating something and recording it
# for cleanup: there it is deferred to the end of that critical section.
critical=0
deferred=0
on_signal() { if ((critical)); then deferred=$1; else exit "$1"; fi; }
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
begin_critical() { critical=1; }
end_critical() {
  critical=0
  if ((deferred)); then exit "$deferred"; fi
}

step() { printf '\n=== %s\n' "$*" >&2; }

step "prerequisites and build"
bash tests/support/prereqs.sh
cargo build -q -p hostctl -p hostctl-agent
hostctl="${CARGO_TARGET_DIR:-$root/target}/debug/hostctl"
agent="${CARGO_TARGET_DIR:-$root/target}/debug/hostctl-agent"

# The Nix settings of the controller and of the hosts (no substituters: all offline).
export NIX_CONFIG="experimental-features = nix-command flakes
substituters ="
unset NIX_REMOTE
nix() { command nix --extra-experimental-features 'nix-command flakes' "$@"; }
commit() { git -c user.name=hostctl -c user.email=hostctl@example.invalid commit -q "$@"; }

step "the fleet repository and a signing key"
work=$(mktemp -d -t hostctl-demo.XXXXXX)
fleet="$work/fleet"
cp -r examples/fleet "$fleet"
(
  cd "$fleet"
  git init -q -b main
  git add -A
  commit -m "example fleet"
  # Nix 2.8 reads the lock's relative `path:` inputs only from the store (see run.sh).
  nix flake update 2>/dev/null
  commit -am "lock for $(command nix --version)" >/dev/null || true   # unchanged with Nix 2.8
)
key="$work/demo-1.sec"   # outside the fleet repository: never committed
(umask 077 && nix key generate-secret --key-name demo-1 >"$key")
pub=$(nix key convert-secret-to-public <"$key")
echo "fleet: $fleet" >&2
echo "public key: $pub" >&2

# Inside a host's private mount namespace: mounts its nix directory ($1) on /nix, then
# execs the command, like the test harness.
# shellcheck disable=SC2016  # expanded by that sh
enter='mount --bind "$1" /nix && shift && exec "$@"'

# Runs ARGV inside host n's namespaces: its netns, a private mount namespace with its
# ROOT/nix on /nix, in ROOT, with the example's state directory.
in_host() {
  local n=$1
  shift
  (cd "${host_roots[$n]}" && HOSTCTL_EXAMPLE_STATE="${host_roots[$n]}/state" \
    exec ip netns exec "hostctl-demo-$n" unshare --mount --propagation private \
    sh -c "$enter" sh "${host_roots[$n]}/nix" "$@")
}

addrs=()
for n in "${!names[@]}"; do
  name=${names[$n]}
  step "host $name"
  k=$((first_slot + n))
  ns="hostctl-demo-$n"
  subnet="198.51.100.$((4 * k))/30"
  here="198.51.100.$((4 * k + 1))"
  addr="198.51.100.$((4 * k + 2))"
  if [ -e "/run/netns/$ns" ]; then
    echo "demo.sh: netns $ns exists already (another demo running, or left over?); not touching it" >&2
    exit 1
  fi
  if [ -n "$(ip -o addr show to "$subnet")" ]; then
    echo "demo.sh: an address in $subnet is already in use here:" >&2
    ip -o addr show to "$subnet" >&2
    exit 1
  fi
  r=$(mktemp -d -t "hostctl-demo-$name.XXXXXX")
  host_roots+=("$r")
  mkdir -p "$r/nix" "$r/state" "$r/etc"
  begin_critical
  ip netns add "$ns"   # fails if it appeared meanwhile: we never take over a netns
  netns_made+=("$ns")
  ip link add "hdemo${n}a" type veth peer name "hdemo${n}b" netns "$ns"
  veth_made+=("hdemo${n}a")
  end_critical
  ip addr add "$here/30" dev "hdemo${n}a"
  # Keeps the host's /30 inside this machine even while the link is down (see simhost.rs).
  begin_critical
  ip route add unreachable "$subnet" metric "$fallback_metric"
  routes_made+=("$subnet")
  end_critical
  ip link set "hdemo${n}a" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$addr/30" dev "hdemo${n}b"
  ip -n "$ns" link set "hdemo${n}b" up
  in_host "$n" nix-store --init
  cat >"$r/etc/agent.yaml" <<EOF
hostname: "$name"
listen: "$addr:$port"
trusted_keys: ["$pub"]
state_dir: "$r/state/agent"
profile: "/nix/var/nix/profiles/system"
confirm_timeout: 30s
bus: session
EOF
  # The same in the background, as one simple command: env, ip netns exec, unshare and
  # sh all exec the next, so $! is the agent itself.
  begin_critical
  env -C "$r" HOSTCTL_EXAMPLE_STATE="$r/state" ip netns exec "$ns" unshare --mount --propagation private \
    sh -c "$enter" sh "$r/nix" "$agent" serve --config "$r/etc/agent.yaml" </dev/null >>"$r/agent.log" 2>&1 &
  agent_pids+=("$!")
  end_critical
  addrs+=("$addr")
  echo "$name: netns $ns, $addr:$port, root $r, agent pid $!" >&2
done

step "waiting for the agents"
for n in "${!names[@]}"; do
  pid=${agent_pids[$n]}
  for ((i = 0; ; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "demo.sh: the agent of ${names[$n]} exited before listening" >&2
      exit 1
    fi
    if (exec 3<>"/dev/tcp/${addrs[$n]}/$port") 2>/dev/null; then
      comm=$(cat "/proc/$pid/comm")
      if [ "$comm" != hostctl-agent ]; then
        echo "demo.sh: pid $pid is \`$comm', not the agent (a wrapper did not exec)" >&2
        exit 1
      fi
      break
    fi
    if ((i >= 200)); then
      echo "demo.sh: the agent of ${names[$n]} does not listen on ${addrs[$n]}:$port after 20 s" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "${names[$n]}: agent listening on ${addrs[$n]}:$port" >&2
done

step "fleet.yaml for the simulated hosts, each agent's identity pinned"
# Each agent generated its identity key at first start and published the public half in
# state_dir/identity.pub (`hostctl-agent identity` prints it too): pinned here as
# `agent_key`, the controller talks TLS to exactly that agent. (`hostctl enroll HOST`
# would record what answers instead, in known_agents.)
{
  printf 'flake: .\ndefaults:\n  port: %s\n  mode: switch\n  confirm_timeout: 30s\nhosts:\n' "$port"
  for n in "${!names[@]}"; do
    identity=$(cat "${host_roots[$n]}/state/agent/identity.pub")
    printf '  %s:\n    address: %s\n    system: x86_64-linux\n    agent_key: %s\n' "${names[$n]}" "${addrs[$n]}" "$identity"
  done
} >"$fleet/fleet.yaml"
cat "$fleet/fleet.yaml"
(cd "$fleet" && commit -am "inventory: simulated hosts")

hostctl() { (cd "$fleet" && "$hostctl" --fleet "$fleet/fleet.yaml" --key "$key" "$@"); }
results() {
  python3 -c 'import json, sys
hosts = json.load(sys.stdin)["hosts"]
print("  ".join("%s: %s" % (h, v.get("result")) for h, v in sorted(hosts.items())))'
}

step "hostctl apply (every host gets its first configuration)"
hostctl apply
step "hostctl status"
hostctl status

step "change web2's motd, commit"
sed -i 's/^\(  motd = "\)[^"]*"/\1web2: web frontend, us (changed by demo.sh)"/' "$fleet/hosts/web2.nix"
grep -n 'motd' "$fleet/hosts/web2.nix"
(cd "$fleet" && commit -am "web2: new motd")

step "hostctl --json apply (only web2 changes)"
json=$(hostctl --json apply)
echo "results: $(results <<<"$json")"
step "hostctl status"
hostctl status

for n in "${!names[@]}"; do
  step "${names[$n]}: ${host_roots[$n]}/state/switch.log"
  cat "${host_roots[$n]}/state/switch.log" 2>/dev/null || echo "(none)"
done
step "done"

if ((keep)); then
  q() { printf '%q' "$1"; }
  cat >&2 <<EOF

=== the simulated hosts keep running; try, in another shell as root:
  cd $(q "$fleet")
  export HOSTCTL_KEY=$(q "$key") NIX_CONFIG=$(q "$NIX_CONFIG")
  $(q "$hostctl") status
  $(q "$hostctl") history web2
  $(q "$hostctl") diff          # nothing yet: edit hosts/web1.nix (its motd) first
  $(q "$hostctl") apply --on web1
  $(q "$hostctl") rollback web2 --generation 1
  $(q "$hostctl") history web2
Agent logs: $(for r in "${host_roots[@]}"; do printf '%s ' "$(q "$r/agent.log")"; done)
To tear everything down: press Enter here, or Ctrl-C, or \`kill $$'.
EOF
  if [ -t 0 ]; then
    read -r _ || true
  else
    # No terminal to read from: wait for a signal (handled between sleeps).
    while :; do sleep 1; done
  fi
fi
