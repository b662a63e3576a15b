# services.hostctl-agent: the hostctl agent on a NixOS host.
#
# `settings` is agent.yaml (see docs/CONFIG.md): its top-level keys are declared as
# options, so a misspelt key fails when the host configuration is evaluated, not when
# the agent starts on the host. It is written as JSON (a subset of YAML) so the module
# needs no YAML library and works on old and new nixpkgs alike (20.09 has no
# lib.literalExpression, only the since-deprecated lib.literalExample).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.hostctl-agent;
  inherit (lib) mkEnableOption mkIf mkOption types;
  literalExpression = lib.literalExpression or lib.literalExample;

  stateDir = "/var/lib/hostctl-agent";
  # The agent's public identity, world-readable (the state directory is not): what a
  # controller pins (fleet.yaml `agent_key`, `hostctl enroll --expect`).
  identityPub = "/run/hostctl-agent/identity.pub";
  publishIdentity = pkgs.writeShellScript "hostctl-agent-publish-identity" ''
    set -eu
    ${cfg.package}/bin/hostctl-agent identity --config /etc/hostctl/agent.yaml > ${identityPub}.tmp
    chmod 0644 ${identityPub}.tmp
    mv ${identityPub}.tmp ${identityPub}
  '';
  binfmtConf = "/etc/nix/hostctl-binfmt.conf";

  # Any JSON value, for the keys whose inside the agent checks (pull, binfmt, health).
  # nixpkgs 20.09 has no pkgs.formats: there a value is taken as given.
  json = if pkgs ? formats then (pkgs.formats.json { }).type else types.unspecified;

  # An agent.yaml key; null (the default) leaves it out, so the agent's default applies.
  setting = type: description: mkOption { type = types.nullOr type; default = null; inherit description; };

  settingsModule = {
    options = {
      hostname = setting types.str "This host's name in the fleet (default: networking.hostName).";
      listen = setting types.str "IP:PORT of the HTTP API (default: listenAddress and port).";
      trusted_keys = mkOption {
        type = types.listOf types.str;
        default = [ ];
        description = "Controller public keys (`name:base64`) whose signed requests are accepted; at least one.";
      };
      state_dir = setting types.str "Where the agent keeps its journal (default: ${stateDir}).";
      profile = setting types.str "The system profile whose generations the agent manages.";
      store = setting types.str "Nix store URL; default: the system store.";
      confirm_timeout = setting types.str "How long to wait for confirmation before rolling back (e.g. `30s`).";
      activation_timeout = setting types.str "How long one activation may run (e.g. `10m`).";
      bus = setting types.str "D-Bus bus: `system`, `session` or an address (default: system).";
      service_manager = setting (types.enum [ "auto" "systemd" "detached" ])
        "What runs activations (default here: systemd).";
      health = setting (types.listOf json) "Checks that must pass after activation.";
      pull = setting json "GitOps mode: pull the flake repository and apply its commits.";
      binfmt = setting json "binfmt_misc emulation (default: from emulatedSystems).";
      caches = setting (types.listOf types.str) "Binary cache URLs a deployment request may name.";
      max_connections = setting types.ints.positive "Open API connections at most (default 512).";
      max_connections_per_peer = setting types.ints.positive
        "Open API connections per peer address at most (default 256).";
      identity_key_file = setting types.str
        "The agent's ed25519 identity key (Nix secret key format, 0600); default: generated in state_dir.";
      metrics_listen = setting types.str "IP:PORT of a plain-HTTP listener serving GET /metrics only (default: off).";
      webhook_listen = setting types.str
        "IP:PORT of a plain-HTTP listener serving the forge webhook only, behind a TLS-terminating proxy (default: off).";
      retention = setting json
        "Which system generations to keep when collecting garbage after each confirmed deployment: `{ keep_last = 5; keep_younger_than = \"30d\"; }` (one or both; default: none, nothing deleted).";
      boot = setting json
        "Reboots: `{ esp = \"/boot\"; }` (the EFI system partition with systemd-boot's loader.conf), `reboot_command` (default: systemd's reboot.target over D-Bus), `boot_id_file`.";
    };
  };

  # What the user set: unset keys (null) and the module system's own `_module` go.
  userSettings = lib.filterAttrs (name: value: name != "_module" && value != null) cfg.settings;

  # What the module decides, under what the user wrote.
  settings = lib.recursiveUpdate
    ({
      hostname = config.networking.hostName;
      listen = "${cfg.listenAddress}:${toString cfg.port}";
      state_dir = stateDir;
      bus = "system";
      service_manager = "systemd";
    } // lib.optionalAttrs (cfg.emulatedSystems != [ ]) {
      binfmt = { emulated_systems = cfg.emulatedSystems; nix_conf = binfmtConf; };
    })
    userSettings;

  configFile = pkgs.writeText "hostctl-agent.yaml" (builtins.toJSON settings);

  # The D-Bus policy the agent ships: root owns org.hostctl.Agent1 and may call
  # everything; others may read properties and call Status/Generations.
  dbusPolicy = pkgs.runCommand "hostctl-agent-dbus-policy" { } ''
    mkdir -p $out/share/dbus-1/system.d
    cp ${../dbus/org.hostctl.Agent1.conf} $out/share/dbus-1/system.d/org.hostctl.Agent1.conf
  '';
in
{
  options.services.hostctl-agent = {
    enable = mkEnableOption "the hostctl agent (deployments pushed by `hostctl apply`, or pulled from git)";

    package = mkOption {
      type = types.package;
      description = "The package providing bin/hostctl-agent (this flake's packages.<system>.hostctl-agent).";
    };

    settings = mkOption {
      type = types.submodule settingsModule;
      default = { };
      example = literalExpression ''
        {
          trusted_keys = [ "fleet-1:ZmxlZXQta2V5LWV4YW1wbGUtbm90LWEtcmVhbC1rZXkhISE=" ];
          pull = { url = "https://git.example.com/infra.git"; branch = "main"; };
        }
      '';
      description = ''
        agent.yaml, as Nix values (docs/CONFIG.md lists every key); a key agent.yaml does
        not have is an error here. `trusted_keys` is required. `hostname`, `listen`,
        `state_dir`, `bus`, `service_manager` and `binfmt` are set from the other options
        unless given here.
      '';
    };

    listenAddress = mkOption {
      type = types.str;
      default = "0.0.0.0";
      description = "Address of the agent's API (TLS).";
    };

    port = mkOption {
      type = types.port;
      default = 7420;
      description = "Port of the agent's API (TLS).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `port` in the firewall (the controller and forge webhooks reach the agent there; `metrics_listen` and `webhook_listen` ports are opened by you).";
    };

    identityFile = mkOption {
      type = types.str;
      default = identityPub;
      readOnly = true;
      description = ''
        The agent's public identity, `<hostname>:<base64>`, world-readable, written before
        each start (`hostctl-agent identity`): collect it into fleet.yaml (`agent_key`) or
        compare it with what `hostctl enroll` shows.
      '';
    };

    restartOnUpgrade = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Restart the agent, once idle, when a switch shipped another hostctl-agent (a
        switch never restarts it: restartIfChanged = false). Off: the new agent starts at
        the agent's next restart or the next boot (`serve --no-restart-on-upgrade`).
      '';
    };

    emulatedSystems = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "aarch64-linux" ];
      description = ''
        Systems the agent keeps registered in binfmt_misc (qemu user-mode emulation), like
        boot.binfmt.emulatedSystems; Nix accepts them through ${binfmtConf}, included from
        nix.conf.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [{
      assertion = (settings.trusted_keys or [ ]) != [ ];
      message = "services.hostctl-agent.settings.trusted_keys must list at least one controller key.";
    }];

    environment.etc."hostctl/agent.yaml".source = configFile;
    services.dbus.packages = [ dbusPolicy ];
    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.port;
    nix.extraOptions = lib.optionalString (cfg.emulatedSystems != [ ]) "!include ${binfmtConf}\n";

    systemd.services.hostctl-agent = {
      description = "hostctl agent";
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "dbus.service" ];
      wants = [ "network-online.target" ];
      # A switch must not restart the agent under its own deployment: the agent follows
      # the activation (a transient unit) and confirms or rolls it back.
      restartIfChanged = false;
      stopIfChanged = false;
      path = [ config.nix.package pkgs.git ];
      # ProtectHome hides /root, where Nix would keep its cache (pull mode evaluates and
      # fetches as root): it keeps it under /var/cache/hostctl-agent instead. Found by the
      # VM lane (tests/vm_pull.rs): without it every pull-mode evaluation failed.
      environment.XDG_CACHE_HOME = "/var/cache/hostctl-agent";
      serviceConfig = {
        ExecStartPre = publishIdentity;
        ExecStart = "${cfg.package}/bin/hostctl-agent serve --config /etc/hostctl/agent.yaml"
          + lib.optionalString (!cfg.restartOnUpgrade) " --no-restart-on-upgrade";
        RuntimeDirectory = "hostctl-agent";
        RuntimeDirectoryMode = "0755";
        Restart = "always";
        RestartSec = 5;
        # The agent exits 75 to be restarted into the new hostctl-agent a switch shipped,
        # once idle (docs/DESIGN.md, "Agent upgrades"): a restart, not a failure.
        RestartForceExitStatus = 75;
        SuccessExitStatus = 75;
        StateDirectory = "hostctl-agent";
        StateDirectoryMode = "0700";
        CacheDirectory = "hostctl-agent";
        CacheDirectoryMode = "0700";
        # The agent runs switch-to-configuration, so it needs root; what it may not
        # touch is still narrowed.
        NoNewPrivileges = true;
        ProtectHome = true;
        PrivateTmp = true;
        ProtectKernelModules = true;
        ProtectControlGroups = false;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        RestrictRealtime = true;
        SystemCallArchitectures = "native";
        UMask = "0077";
        # systemd's default soft limit is 1024 open files; the agent caps its API
        # connections (`max_connections`, 512 by default) well below this, and imports,
        # the journal and Nix need the rest.
        LimitNOFILE = 65536;
      };
    };
  };
}
