# Builds a host's /etc: $out/etc/{hostname,motd,os-release,hostctl/roles/<role>}.
# Runs as `/bin/sh -eu` with PATH unset: builtins and /bin/... only.
/bin/mkdir -p "$out/etc/hostctl/roles"
printf '%s\n' "$hostName" > "$out/etc/hostname"
printf '%s\n' "$motd" > "$out/etc/motd"
printf '%s' "$osRelease" > "$out/etc/os-release"
for role in $rolePaths; do
  /bin/ln -s "$role" "$out/etc/hostctl/roles/${role#*-hostctl-example-role-}"
done
