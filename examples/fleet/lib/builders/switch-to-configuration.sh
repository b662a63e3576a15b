# A stand-in for NixOS's switch-to-configuration that never touches the real
# system. Usage: switch-to-configuration switch|boot|test|dry-activate
#
# HOSTCTL_EXAMPLE_STATE unset or empty: print what would be done, exit 0.
# HOSTCTL_EXAMPLE_STATE=DIR (created if missing; nothing outside DIR is written):
#   - append "<mode> <hostname> <toplevel> exit=<code>" to DIR/switch.log;
#   - switch and test write the toplevel to DIR/current-system,
#     switch and boot write it to DIR/boot-system, dry-activate writes neither;
#   - to fail on purpose, create DIR/fail-switch-<hostname> or DIR/fail-switch:
#     the script then exits with the number written in that file (1-255;
#     2, "activation failed", when the file is empty or holds no number) and
#     leaves current-system and boot-system alone.
#   - a simulated systemd-boot ESP, DIR/esp (when DIR/esp/loader/loader.conf exists):
#     switch and boot write its entries as NixOS's installer does, one
#     loader/entries/nixos-generation-<N>.conf per generation of the system profile
#     (options init=<toplevel>/init and its kernel-params), remove those of
#     generations gone, and make this system's generation loader.conf's default.
set -u

mode=${1-}
case $mode in
  switch | boot | test | dry-activate) ;;
  *)
    echo "usage: $0 switch|boot|test|dry-activate" >&2
    exit 1
    ;;
esac

state=${HOSTCTL_EXAMPLE_STATE-}
if [ -z "$state" ]; then
  echo "hostctl example: would $mode $hostname to $toplevel (HOSTCTL_EXAMPLE_STATE is not set: nothing recorded)"
  exit 0
fi
[ -d "$state" ] || /bin/mkdir -p -- "$state" || exit 1

code=0
for fail_file in "$state/fail-switch-$hostname" "$state/fail-switch"; do
  if [ -e "$fail_file" ]; then
    wanted=
    read -r wanted < "$fail_file" || :
    case $wanted in
      '' | *[!0-9]*) code=2 ;;
      *) code=$wanted ;;
    esac
    break
  fi
done

printf '%s %s %s exit=%s\n' "$mode" "$hostname" "$toplevel" "$code" >> "$state/switch.log" || exit 1
if [ "$code" -ne 0 ]; then
  echo "hostctl example: $mode of $hostname fails on purpose ($fail_file exists): exit $code" >&2
  exit "$code"
fi

case $mode in
  switch | test) printf '%s\n' "$toplevel" > "$state/current-system" || exit 1 ;;
esac
case $mode in
  switch | boot) printf '%s\n' "$toplevel" > "$state/boot-system" || exit 1 ;;
esac

# loader_entries ESP: systemd-boot's entries in ESP (see the top of this file).
loader_entries() {
  profile=/nix/var/nix/profiles/system entries=$1/loader/entries default=0
  /bin/mkdir -p "$entries" || return 1
  for link in "$profile"-*-link; do
    sys=$(/bin/readlink "$link") && [ -e "$sys/kernel-params" ] || continue
    gen=${link#"$profile"-} gen=${gen%-link}
    printf 'title NixOS (hostctl example)\nversion Generation %s\nlinux %s/kernel\ninitrd %s/initrd\noptions init=%s/init %s\n' \
      "$gen" "$sys" "$sys" "$sys" "$(/bin/cat "$sys/kernel-params")" > "$entries/nixos-generation-$gen.conf" || return 1
    [ "$sys" = "$toplevel" ] && [ "$gen" -gt "$default" ] && default=$gen
  done
  for entry in "$entries"/nixos-generation-*.conf; do
    gen=${entry##*/nixos-generation-} gen=${gen%.conf}
    [ -e "$profile-$gen-link" ] || /bin/rm -f "$entry"
  done
  [ "$default" != 0 ] || { echo "switch-to-configuration: $toplevel is no generation of $profile" >&2; return 1; }
  printf 'timeout 0\ndefault nixos-generation-%s.conf\n' "$default" > "$1/loader/loader.conf"
}
case $mode in
  switch | boot) [ ! -f "$state/esp/loader/loader.conf" ] || loader_entries "$state/esp" || exit 1 ;;
esac
echo "hostctl example: $mode $hostname to $toplevel (recorded in $state/switch.log)"
exit 0
