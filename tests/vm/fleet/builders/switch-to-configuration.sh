# A TEST FIXTURE standing in for NixOS's switch-to-configuration on the VM lane's Debian
# guests, keeping its contract on the guest's real systemd:
#   switch|test   compare the running system's units (/run/current-system) with this
#                 system's; stop removed units (unless X-StopOnRemoval=false), run
#                 `activate`, daemon-reload, then reload changed units marked
#                 X-ReloadIfChanged=true, restart other changed units, except those marked
#                 X-RestartIfChanged=false (the agent's own, which is left running), and
#                 start new ones
#   switch|boot   make this system the next boot's (/nix/var/nix/hostctl-vm/next-boot,
#                 read by the guest's /sbin/hostctl-vm-init: the lane's boot loader)
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

if [ "$mode" = switch ] || [ "$mode" = boot ]; then
  mkdir -p /nix/var/nix/hostctl-vm || exit 1
  ln -sfn "$toplevel" /nix/var/nix/hostctl-vm/next-boot.tmp &&
    mv -T /nix/var/nix/hostctl-vm/next-boot.tmp /nix/var/nix/hostctl-vm/next-boot || exit 1
  sync
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
