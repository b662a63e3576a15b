# A stand-in for NixOS's activation script; switch-to-configuration does not
# call it. It never touches the real system: with HOSTCTL_EXAMPLE_STATE=DIR it
# appends "activate <hostname> <toplevel> exit=0" to DIR/switch.log, otherwise
# it only prints what it would do.
set -u

state=${HOSTCTL_EXAMPLE_STATE-}
if [ -z "$state" ]; then
  echo "hostctl example: would activate $hostname ($toplevel) (HOSTCTL_EXAMPLE_STATE is not set: nothing recorded)"
  exit 0
fi
[ -d "$state" ] || /bin/mkdir -p -- "$state" || exit 1
printf 'activate %s %s exit=0\n' "$hostname" "$toplevel" >> "$state/switch.log" || exit 1
echo "hostctl example: activated $hostname ($toplevel) (recorded in $state/switch.log)"
exit 0
