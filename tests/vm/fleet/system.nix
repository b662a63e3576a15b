# mkSystem { name, agentUnit, services ? { }, agentTag ? "" }: a system shaped like a
# NixOS toplevel, for the VM lane's Debian guests (a test fixture):
#   bin/switch-to-configuration   NixOS's contract on the guest's real systemd (see builders/)
#   activate                      links /run/current-system and this system's units
#   init                          stage 2: activate, then exec the guest's systemd
#   etc/systemd/system/*.service  the units: hostctl-agent.service and `services`
#   kernel, initrd                links to the guest image's /vmlinuz and /initrd.img: the
#                                 lane boots that kernel directly (qemu -kernel), so these
#                                 name it rather than carry one
# `services.<name>` = { exec; type ? "simple"; version ? ""; reload ? false; restart ? true; }
# becomes <name>.service; `version` only changes the unit's text (a changed unit);
# `reload` marks it X-ReloadIfChanged, `restart = false` X-RestartIfChanged=false.
# `agentTag` changes the agent's unit text, which its X-RestartIfChanged=false must keep
# from restarting it. `agentProgram` (a path in the fleet: another agent binary) makes the
# unit's ExecStart start that program, from the store, instead of the seed disk's.
#
# Booting (the UEFI guests' loader entries, tests/vm/fleet/builders/switch-to-configuration.sh):
#   kernel-params                 the kernel command line after `init=`: `kernelParams`
#                                 (a "kernel change" is a change of it: reboot needed) or,
#                                 with `bootFails = true`, one whose initrd cannot find the
#                                 root: the boot panics and reboots by itself (panic=5)
{ name, agentUnit, services ? { }, agentTag ? ""
, kernelParams ? "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 panic=5"
, bootFails ? false, agentProgram ? null }:
let
  system = "x86_64-linux";
  version = "24.05-vm";
  bool = b: if b then "true" else "false";
  serviceUnit = unit: s: builtins.toFile "${unit}.service" ''
    [Unit]
    Description=hostctl VM lane test service ${unit} ${s.version or ""}
    X-RestartIfChanged=${bool (s.restart or true)}
    X-ReloadIfChanged=${bool (s.reload or false)}
    [Service]
    Type=${s.type or "simple"}
    ExecStart=${s.exec}
    ${if s.reload or false then "ExecReload=/bin/true" else ""}
    ${if (s.type or "simple") == "oneshot" then "RemainAfterExit=yes" else ""}
  '';
  seedExecStart = "ExecStart=/opt/hostctl/bin/hostctl-agent ";
  pointed = builtins.replaceStrings [ seedExecStart ] [ "ExecStart=${agentProgram} " ] agentUnit;
  agentText = if agentProgram == null then agentUnit
    else if pointed == agentUnit
    then throw "system.nix: the agent unit has no `${seedExecStart}` line to point at agentProgram"
    else pointed;
  agent = builtins.toFile "hostctl-agent.service"
    (agentText + (if agentTag == "" then "" else "# system tag: ${agentTag}\n"));
  units = [ agent ] ++ map (unit: serviceUnit unit services.${unit}) (builtins.attrNames services);
  script = file: builtins.readFile file;
  toplevel = builtins.derivation {
    name = "nixos-system-${name}-${version}";
    inherit system;
    builder = "/bin/sh";
    args = [ "-eu" ./builders/toplevel.sh ];
    hostName = name;
    nixosVersion = version;
    inherit units;
    switchScript = script ./builders/switch-to-configuration.sh;
    activateScript = script ./builders/activate.sh;
    initScript = script ./builders/init.sh;
    kernelParams = if bootFails
      then "root=/dev/disk/by-label/hostctl-vm-no-such-root rootdelay=1 console=ttyS0 panic=5"
      else kernelParams;
  };
in
{
  config = {
    networking.hostName = name;
    nixpkgs.system = system;
    nixpkgs.hostPlatform.system = system;
    system.build.toplevel = toplevel;
    system.nixos.version = version;
    system.nixos.release = "24.05";
  };
}
