# A TEST FIXTURE standing in for NixOS's switch-to-configuration on the VM lane's Debian
# guests, keeping its contract on the guest's real systemd:
#   switch|test   compare the running system's units (/run/current-system) with this
#                 system's; stop removed units (unless X-StopOnRemoval=false), run
#                 `activate`, daemon-reload, then reload changed units marked
#                 X-ReloadIfChanged=true, restart other changed units, except those marked
#                 X-RestartIfChanged=false (the agent's own, which is left running), and
#                 start new ones
#   switch|boot   make this system the next boot's (/nix/var/nix/hostctl-vm/next-boot,
#                 read by the guest's /sbin/hostctl-vm-init: the lane's boot loader); in a
#                 UEFI guest (ESP on /boot) instead write systemd-boot's entries and
#                 loader.conf default as NixOS's installer does (loader_entries below)
#   dry-activate  print what switch would do, change nothing
#   a test hold  while /run/hostctl-vm-hold-switch exists, waits before doing anything
#                 (tests hold a deployment between the profile switch and the activation;
#                 /run is a tmpfs, so a power cut releases it)
# Exit codes as NixOS's: 0 ok, 1 bad usage, 2 activation script failed, 4 units failed
# (a unit that failed to start, restart or reload, or that is failed a second later).
# Simplified: a changed unit is restarted after activation (never stopped before it), and
# units are compared by their text, not their parsed settings.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mode=${1-}
case $mode in
  switch | boot | test | dry-activate) ;;
  *) echo "usage: $0 switch|boot|test|dry-activate" >&2; exit 1 ;;
esac
while [ -e /run/hostctl-vm-hold-switch ]; do sleep 0.2; done
units=etc/systemd/system
old=$(readlink -f /run/current-system 2>/dev/null) || old=
[ -n "$old" ] && [ -d "$old/$units" ] || old=

# esp_copy FILE KIND: copies FILE to the ESP as /EFI/nixos/<its sha256>-KIND.efi (once)
# and prints that name, as NixOS's installer does with the store path's hash.
esp_copy() {
  sum=$(sha256sum <"$1" | cut -c1-32) || return 1
  efi=/EFI/nixos/$sum-$2.efi
  if [ ! -e "/boot$efi" ]; then
    cp "$1" "/boot$efi.tmp" && mv "/boot$efi.tmp" "/boot$efi" || return 1
  fi
  echo "$efi"
}

# loader_entries: systemd-boot's entries as NixOS's installer writes them, one per
# generation of the system profile (nixos-generation-<N>.conf: its kernel and initrd
# copied to the ESP, options init=<toplevel>/init and its kernel-params), entries of
# generations gone removed, and loader.conf's default: this system's generation (the
# profile's own if it is this system, else the newest that is).
loader_entries() {
  profile=/nix/var/nix/profiles/system entries=/boot/loader/entries default= newest=0
  for link in "$profile"-*-link; do
    sys=$(readlink -f "$link") && [ -e "$sys/kernel-params" ] || continue
    gen=${link#"$profile"-} gen=${gen%-link}
    kernel=$(esp_copy "$sys/kernel" bzImage) && initrd=$(esp_copy "$sys/initrd" initrd) || return 1
    printf 'title NixOS (hostctl VM lane fixture)\nversion Generation %s\nlinux %s\ninitrd %s\noptions init=%s/init %s\n' \
      "$gen" "$kernel" "$initrd" "$sys" "$(cat "$sys/kernel-params")" >"$entries/nixos-generation-$gen.tmp" &&
      mv "$entries/nixos-generation-$gen.tmp" "$entries/nixos-generation-$gen.conf" || return 1
    [ "$sys" = "$toplevel" ] && [ "$gen" -gt "$newest" ] && newest=$gen
  done
  current=$(readlink "$profile") current=${current#system-} current=${current%-link}
  [ "$(readlink -f "$profile")" = "$toplevel" ] && default=$current || default=$newest
  if [ "$default" = 0 ]; then
    echo "switch-to-configuration: $toplevel is no generation of $profile: no loader entry" >&2
    return 1
  fi
  for entry in "$entries"/nixos-generation-*.conf; do
    gen=${entry##*/nixos-generation-} gen=${gen%.conf}
    [ -e "$profile-$gen-link" ] || rm -f "$entry"
  done
  printf 'timeout 0\ndefault nixos-generation-%s.conf\n' "$default" >/boot/loader/loader.conf.tmp &&
    mv /boot/loader/loader.conf.tmp /boot/loader/loader.conf || return 1
  sync
}

if [ "$mode" = switch ] || [ "$mode" = boot ]; then
  if [ -d /sys/firmware/efi ] && [ -f /boot/loader/loader.conf ]; then
    # A UEFI guest: its systemd-boot is the boot loader (the next-boot link would make
    # the image's own entry run this system too).
    loader_entries || exit 1
  else
    mkdir -p /nix/var/nix/hostctl-vm || exit 1
    ln -sfn "$toplevel" /nix/var/nix/hostctl-vm/next-boot.tmp &&
      mv -T /nix/var/nix/hostctl-vm/next-boot.tmp /nix/var/nix/hostctl-vm/next-boot || exit 1
    sync
  fi
  if [ "$mode" = boot ]; then
    echo "switch-to-configuration: $toplevel is the next boot's system"
    exit 0
  fi
fi

# setting FILE KEY: the last KEY= value in the unit file.
setting() { sed -n "s/^$2=//p" "$1" | tail -n 1; }

stop= start= restart= reload= kept=
for unit in "$toplevel/$units"/*.service; do
  name=${unit##*/}
  if [ -z "$old" ] || [ ! -e "$old/$units/$name" ]; then
    start="$start $name"
  elif ! cmp -s "$old/$units/$name" "$unit"; then
    if [ "$(setting "$unit" X-RestartIfChanged)" = false ]; then
      kept="$kept $name"
    elif [ "$(setting "$unit" X-ReloadIfChanged)" = true ]; then
      reload="$reload $name"
    else
      restart="$restart $name"
    fi
  fi
done
if [ -n "$old" ]; then
  for unit in "$old/$units"/*.service; do
    name=${unit##*/}
    [ -e "$toplevel/$units/$name" ] && continue
    [ "$(setting "$unit" X-StopOnRemoval)" = false ] || stop="$stop $name"
  done
fi
echo "switch-to-configuration $mode: stop:$stop; start:$start; restart:$restart; reload:$reload; changed, not restarted:$kept"
[ "$mode" = dry-activate ] && exit 0

code=0
for name in $stop; do systemctl stop "$name" || code=4; done
if ! "$toplevel/activate"; then
  echo "switch-to-configuration: the activation script failed" >&2
  exit 2
fi
systemctl daemon-reload || code=4
for name in $reload; do systemctl reload "$name" || { echo "reloading $name failed" >&2; code=4; }; done
for name in $restart; do systemctl restart "$name" || { echo "restarting $name failed" >&2; code=4; }; done
for name in $start; do systemctl start "$name" || { echo "starting $name failed" >&2; code=4; }; done
sleep 1
for name in $reload $restart $start; do
  if systemctl is-failed --quiet "$name"; then
    echo "$name is failed" >&2
    code=4
  fi
done
[ "$code" = 0 ] || echo "switch-to-configuration: some units failed (exit $code)" >&2
exit "$code"
