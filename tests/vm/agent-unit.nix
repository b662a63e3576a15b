# The hostctl-agent.service the VM lane installs in its Debian guests, rendered from
# agent/nixos/module.nix's own `systemd.services.hostctl-agent` (evaluated without nixpkgs
# by tests/nix/stub-eval-agent-module.nix), so the guests run the agent with the unit
# settings a NixOS host gets: one source for both.
#   nix-instantiate --eval --strict --json tests/vm/agent-unit.nix \
#     --argstr module agent/nixos/module.nix --argstr package /opt/hostctl
# Rendered as NixOS renders a unit: restartIfChanged/stopIfChanged become
# X-RestartIfChanged/X-StopIfChanged (what switch-to-configuration reads), `path` becomes
# PATH. On Debian the packages of `path` (nix, git) are in /usr/bin.
{ module, package }:
let
  service = (import ../nix/stub-eval-agent-module.nix { inherit module package; }).agentService;
  # A script the module makes with pkgs.writeShellScript: installed by the lane beside
  # the agent (`scripts` below), named by its path there.
  isScript = v: builtins.isAttrs v && v ? text;
  value = v:
    if isScript v then "${package}/bin/${v.name}"
    else if builtins.isBool v then (if v then "true" else "false")
    else if builtins.isList v then builtins.concatStringsSep " " (map toString v)
    else toString v;
  lines = attrs: builtins.concatStringsSep ""
    (map (name: "${name}=${value attrs.${name}}\n") (builtins.attrNames attrs));
  known = [ "description" "wantedBy" "after" "wants" "restartIfChanged" "stopIfChanged" "path" "environment" "serviceConfig" ];
  environment = builtins.concatStringsSep ""
    (map (name: "Environment=\"${name}=${service.environment.${name}}\"\n") (builtins.attrNames service.environment));
  unknown = builtins.filter (k: !(builtins.elem k known)) (builtins.attrNames service);
  unit = {
    Description = service.description;
    After = service.after;
    Wants = service.wants;
    X-RestartIfChanged = service.restartIfChanged;
    X-StopIfChanged = service.stopIfChanged;
  };
in
if unknown != [ ] then throw "tests/vm/agent-unit.nix does not render ${builtins.concatStringsSep ", " unknown} of the module's hostctl-agent service: teach it"
else {
  scripts = builtins.listToAttrs (map (v: { inherit (v) name; value = v.text; })
    (builtins.filter isScript (builtins.attrValues service.serviceConfig)));
  unit = ''
  # Rendered from agent/nixos/module.nix by tests/vm/agent-unit.nix.
  [Unit]
  ${lines unit}
  [Service]
  Environment="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  ${environment}${lines service.serviceConfig}
  [Install]
  WantedBy=${value service.wantedBy}
'';
}
