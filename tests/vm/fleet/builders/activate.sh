# Activation of a VM lane system: makes it /run/current-system and its units the ones in
# /etc/systemd/system (links into the store; links of other systems' units are removed;
# every unit of the system is wanted by multi-user.target). Starts and stops nothing:
# that is switch-to-configuration's part, as on NixOS.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
units=/etc/systemd/system
mkdir -p "$units/multi-user.target.wants" || exit 2
for link in "$units"/*.service "$units"/multi-user.target.wants/*.service; do
  [ -L "$link" ] || continue
  case $(readlink "$link") in
    /nix/store/*) [ -e "$toplevel/etc/systemd/system/${link##*/}" ] || rm -f "$link" ;;
  esac
done
for unit in "$toplevel"/etc/systemd/system/*.service; do
  name=${unit##*/}
  ln -sfn "$unit" "$units/$name.tmp" && mv -T "$units/$name.tmp" "$units/$name" || exit 2
  ln -sfn "$unit" "$units/multi-user.target.wants/$name" || exit 2
done
ln -sfn "$toplevel" /run/current-system.tmp && mv -T /run/current-system.tmp /run/current-system || exit 2
echo "activated $hostname: $toplevel"
