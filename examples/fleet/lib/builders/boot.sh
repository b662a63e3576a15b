# Builds the boot parts of a host's system, in miniature (text files, nothing bootable):
#   kind=kernel   $out/bzImage and $out/lib/modules/<version>/modules.dep
#   kind=initrd   $out/initrd (naming the kernel it was made for)
#   kind=systemd  $out/lib/systemd/systemd
# A change of one of them is what makes a NixOS system need a reboot (DESIGN.md).
# Runs as `/bin/sh -eu` with PATH unset: builtins and /bin/... only.
case $kind in
  kernel)
    /bin/mkdir -p "$out/lib/modules/$version"
    printf 'hostctl example kernel %s\n' "$version" > "$out/bzImage"
    printf '# modules of the hostctl example kernel %s\n' "$version" > "$out/lib/modules/$version/modules.dep"
    ;;
  initrd)
    /bin/mkdir -p "$out"
    printf 'hostctl example initrd for %s\n' "$kernel" > "$out/initrd"
    ;;
  systemd)
    /bin/mkdir -p "$out/lib/systemd"
    printf 'hostctl example systemd %s\n' "$version" > "$out/lib/systemd/systemd"
    ;;
  *)
    echo "boot.sh: unknown kind '$kind'" >&2
    exit 1
    ;;
esac
