# Stage 2 of a boot into this system: /sbin/hostctl-vm-init (tests/vm/guest-init.sh) runs
# it as PID 1 when this system is the next boot's. Activates it, marks it booted, then
# hands PID 1 to the guest's systemd.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
"$toplevel/activate" || echo "init: activating $toplevel failed; booting systemd anyway" >&2
ln -sfn "$toplevel" /run/booted-system
exec /lib/systemd/systemd
