# Evaluates agent/nixos/module.nix without nixpkgs: a stand-in `lib` with only what the
# module uses (options become their declarations, `mkIf` is taken as true) and a `config`
# as the NixOS module system would pass it (every declared setting present, unset ones
# null, plus `_module`). Returns the declared settings keys and the agent.yaml written,
# for tests/tests/nixos_module.rs to hold against agent.yaml's schema and the agent, and
# the agent's systemd service as the module declares it (tests/vm/agent-unit.nix renders
# it for the VM lane's guests; `package` is where the agent binary is there).
{ module, package ? "/nix/store/00000000000000000000000000000000-hostctl-agent" }:
let
  recursiveUpdate = lhs: rhs:
    lhs // builtins.mapAttrs
      (name: value:
        if builtins.isAttrs value && builtins.isAttrs (lhs.${name} or null)
        then recursiveUpdate lhs.${name} value else value)
      rhs;
  lib = {
    inherit recursiveUpdate;
    mkEnableOption = description: { inherit description; };
    mkOption = declaration: declaration;
    mkIf = _: value: value;
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    filterAttrs = pred: set:
      builtins.listToAttrs (map (name: { inherit name; value = set.${name}; })
        (builtins.filter (name: pred name set.${name}) (builtins.attrNames set)));
    optionalAttrs = cond: set: if cond then set else { };
    optional = cond: x: if cond then [ x ] else [ ];
    optionalString = cond: s: if cond then s else "";
    types = {
      package = "package";
      str = "str";
      bool = "bool";
      port = "port";
      listOf = t: { listOf = t; };
      nullOr = t: { nullOr = t; };
      enum = values: { enum = values; };
      ints = { positive = "positive int"; };
      submodule = m: { submodule = m; };
    };
  };
  pkgs = {
    formats.json = _: { type = "json"; };
    writeText = name: text: { inherit name text; };
    writeShellScript = name: text: { inherit name text; };
    runCommand = name: _: _: { inherit name; };
    git = "git";
  };
  declared = evaluated.options.services.hostctl-agent.settings.type.submodule.options;
  unset = builtins.mapAttrs (_: _: null) declared;
  probe = {
    networking.hostName = "web1";
    nix.package = "nix";
    services.hostctl-agent = {
      enable = true;
      inherit package;
      listenAddress = "0.0.0.0";
      port = 7420;
      openFirewall = false;
      emulatedSystems = [ "aarch64-linux" ];
      restartOnUpgrade = true;
      settings = unset // {
        _module = { args = { }; };
        trusted_keys = [ "fleet-1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" ];
        confirm_timeout = "45s";
        binfmt = { interpreters = { }; };
      };
    };
  };
  evaluated = import module { inherit lib pkgs; config = probe; };
in
{
  settingsKeys = builtins.attrNames declared;
  agentYaml = evaluated.config.environment.etc."hostctl/agent.yaml".source.text;
  agentService = evaluated.config.systemd.services.hostctl-agent;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) evaluated.config.assertions);
}
