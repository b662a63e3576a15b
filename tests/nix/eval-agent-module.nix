# Evaluates agent/nixos/module.nix in a NixOS configuration built from the nixpkgs at
# `nixpkgs` (a path, given with --argstr) and returns what tests/tests/nixos_module.rs
# checks. Nothing is built: the agent package is a derivation that is never realised.
# `wrongKey` adds a key agent.yaml does not have, which must fail the evaluation.
{ nixpkgs, module, wrongKey ? false }:
let
  system = "x86_64-linux";
  fakeAgent = derivation { name = "hostctl-agent-fake"; inherit system; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; };
  eval = import (/. + nixpkgs + "/nixos/lib/eval-config.nix") {
    inherit system;
    modules = [
      (/. + module)
      {
        boot.loader.grub.enable = false;
        fileSystems."/" = { device = "none"; fsType = "tmpfs"; };
        networking.hostName = "web1";
        services.hostctl-agent = {
          enable = true;
          package = fakeAgent;
          openFirewall = true;
          emulatedSystems = [ "aarch64-linux" ];
          settings = {
            trusted_keys = [ "fleet-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ];
            confirm_timeout = "45s";
          } // (if wrongKey then { colour = "blue"; } else { });
        };
      }
    ];
  };
  c = eval.config;
  unit = c.systemd.services.hostctl-agent;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  restartIfChanged = unit.restartIfChanged;
  stopIfChanged = unit.stopIfChanged;
  execStart = unit.serviceConfig.ExecStart;
  stateDirectory = unit.serviceConfig.StateDirectory;
  runtimeDirectory = unit.serviceConfig.RuntimeDirectory;
  execStartPre = "${unit.serviceConfig.ExecStartPre}";
  identityFile = c.services.hostctl-agent.identityFile;
  wantedBy = unit.wantedBy;
  ports = c.networking.firewall.allowedTCPPorts;
  dbusPackages = map (p: p.name) c.services.dbus.packages;
  nixExtraOptions = c.nix.extraOptions;
  agentYaml = c.environment.etc."hostctl/agent.yaml".source.text;
}
