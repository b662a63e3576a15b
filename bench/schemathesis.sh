#!/usr/bin/env bash
# Runs schemathesis (PyPI, 4.x) against a live hostctl-agent with valid request signatures,
# using the OpenAPI document schemas/openapi/agent-v1.yaml and every check.
#
#   bench/schemathesis.sh [extra `st run` arguments, e.g. --max-examples 50 --seed 1]
#
# What it starts, all on 127.0.0.1 and all stopped by pid on exit:
#   - one `hostctl-agent serve` in pull mode (a local bare repository, a webhook secret),
#     with a private `local?root=` Nix store, its own state dir and system profile, the
#     detached service manager and an unreachable bus; the store holds one fake system
#     (`bin/switch-to-configuration` that exits 0), the one the document's examples deploy;
#   - tests/src/bin/sign-proxy.rs in front of it, which signs each request carrying the
#     placeholder credential (schemas/openapi/schemathesis.toml) with a fresh fleet key.
# Reports go to target/schemathesis/ (JUnit and NDJSON), with the agent's and proxy's logs.
# Not run by CI: it takes minutes and needs `st` (`pip install schemathesis`).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v st >/dev/null || { echo "schemathesis.sh: needs the schemathesis CLI (pip install schemathesis)" >&2; exit 2; }

cargo build --quiet -p hostctl-agent -p hostctl-tests --bin hostctl-agent --bin sign-proxy
bin="$root/target/debug"
out="$root/target/schemathesis"
rm -rf "$out" && mkdir -p "$out"

umask 077
work=$(mktemp -d /tmp/hostctl-schemathesis.XXXXXX)
agent_pid="" proxy_pid=""
cleanup() {
    local status=$?
    for pid in $proxy_pid $agent_pid; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    cp "$work"/agent.log "$work"/proxy.log "$out"/ 2>/dev/null || true
    # The private store's files are read-only; make them removable first.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

export NIX_CONFIG=$'experimental-features = nix-command flakes\nsubstituters ='
nix key generate-secret --key-name schemathesis-1 >"$work/fleet.sec"
public=$(nix key convert-secret-to-public <"$work/fleet.sec")
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/webhook.secret"

# The fake system the document's examples name (its store path is fixed by its content).
system_src="$work/src/hostctl-openapi-example-system"
mkdir -p "$system_src/bin"
printf '#!/bin/sh\n# hostctl openapi example system: activating it changes nothing.\nexit 0\n' \
    >"$system_src/bin/switch-to-configuration"
chmod 755 "$system_src/bin/switch-to-configuration"
store="local?root=$work/root"
system=$(nix-store --store "$store" --add "$system_src")
grep -q "$system" schemas/openapi/agent-v1.yaml ||
    { echo "schemathesis.sh: $system is not the example system of agent-v1.yaml" >&2; exit 1; }

# Pull mode: a branch with one commit (no flake, so its evaluation fails and is journaled).
git init --quiet --bare "$work/remote.git"
git init --quiet "$work/checkout"
git -C "$work/checkout" -c user.name=st -c user.email=st@localhost commit --quiet --allow-empty -m "no flake here"
git -C "$work/checkout" push --quiet "$work/remote.git" HEAD:refs/heads/main

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/profiles"
cat >"$work/agent.yaml" <<EOF
hostname: st-agent
listen: 127.0.0.1:$port
trusted_keys: ["$public"]
state_dir: $work/state
profile: $work/profiles/system
store: "$store"
confirm_timeout: 30s
bus: unix:path=$work/no-bus
service_manager: detached
pull:
  url: $work/remote.git
  branch: main
  interval: 1h
  webhook_secret_file: $work/webhook.secret
EOF

RUST_LOG=info "$bin/hostctl-agent" serve --config "$work/agent.yaml" </dev/null >/dev/null 2>"$work/agent.log" &
agent_pid=$!
for _ in $(seq 200); do
    kill -0 "$agent_pid" 2>/dev/null || { cat "$work/agent.log" >&2; echo "schemathesis.sh: the agent exited" >&2; exit 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

"$bin/sign-proxy" --agent "127.0.0.1:$port" --host st-agent --agent-key "$(cat "$work/state/identity.pub")" --key "$work/fleet.sec" --webhook-secret "$work/webhook.secret" \
    </dev/null >"$work/proxy.url" 2>"$work/proxy.log" &
proxy_pid=$!
for _ in $(seq 100); do
    [ -s "$work/proxy.url" ] && break
    kill -0 "$proxy_pid" 2>/dev/null || { cat "$work/proxy.log" >&2; exit 1; }
    sleep 0.1
done
url=$(head -n1 "$work/proxy.url")
echo "agent on 127.0.0.1:$port (pid $agent_pid), signing proxy on $url (pid $proxy_pid), example system $system" >&2

set +e
st --config-file schemas/openapi/schemathesis.toml run schemas/openapi/agent-v1.yaml \
    --url "$url" --checks all --exclude-checks unsupported_method --workers 2 \
    --report junit,ndjson --report-dir "$out" "$@"
status=$?
set -e
if ! kill -0 "$agent_pid" 2>/dev/null; then
    echo "schemathesis.sh: the agent died during the run (log: $out/agent.log)" >&2
    status=1
fi
if grep -q "panicked" "$work/agent.log"; then
    echo "schemathesis.sh: the agent panicked (log: $out/agent.log)" >&2
    status=1
fi
echo "schemathesis.sh: $(grep -c ' -> ' "$work/proxy.log") requests relayed; reports in $out" >&2
exit "$status"
