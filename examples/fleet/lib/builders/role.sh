# Builds one role: $out/role.conf.
# Runs as `/bin/sh -eu` with PATH unset: builtins and /bin/... only.
/bin/mkdir -p "$out"
printf '%s' "$roleConfig" > "$out/role.conf"
