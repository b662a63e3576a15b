# Builds a VM lane system (see ../system.nix). Runs as `/bin/sh -eu` with PATH unset:
# builtins and /bin/... only.
/bin/mkdir -p "$out/bin" "$out/etc/systemd/system" "$out/specialisation"
write_script() {
  {
    printf '#!/bin/sh\n'
    printf '# %s of a hostctl VM lane test system (a fixture, not NixOS).\n' "${1##*/}"
    printf "hostname='%s'\n" "$hostName"
    printf "toplevel='%s'\n" "$out"
    printf '%s' "$2"
  } > "$1"
  /bin/chmod 0755 "$1"
}
write_script "$out/bin/switch-to-configuration" "$switchScript"
write_script "$out/activate" "$activateScript"
write_script "$out/init" "$initScript"
for unit in $units; do
  # A store file is <hash>-<name>; copied, not linked: systemd takes a link whose target
  # has another name for an alias.
  /bin/cp "$unit" "$out/etc/systemd/system/${unit#/nix/store/*-}"
done
/bin/ln -s /vmlinuz "$out/kernel"
/bin/ln -s /initrd.img "$out/initrd"
printf '%s' "$kernelParams" > "$out/kernel-params"
printf '%s' "$nixosVersion" > "$out/nixos-version"
printf '%s' "$system" > "$out/system"
printf 'systemd' > "$out/init-interface-version"
