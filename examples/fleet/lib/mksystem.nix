# fleetlib's implementation. `lib` is the (fake) nixpkgs lib fleetlib was
# given: its own pinned one, or the fleet's when the fleet uses `follows`.
{ lib }:
let
  # DESIGN.md's host name rule.
  hostNameRegex = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

  # The roles a host can have, and what each puts in
  # /etc/hostctl/roles/<role>/role.conf. A role does not depend on the host, so
  # hosts with the same role and system share that store path (closures overlap).
  roleConfigs = {
    nginx = ''
      # nginx (example): answers /healthz on port 80
      listen 80;
      location /healthz { return 200 "ok"; }
    '';
    postgresql = ''
      # postgresql (example)
      listen_addresses = '*'
      port = 5432
    '';
    edge-proxy = ''
      # edge-proxy (example): forwards to the web hosts
      upstream web1 web2
    '';
  };

  # Every derivation is built by /bin/sh running one of ./builders/*.sh. There
  # is no PATH in a Nix build: the builders use shell builtins and absolute
  # paths such as /bin/mkdir (present on the build machine; the example relies
  # on sandbox = false).
  mkDerivation = { name, system, builder, env ? { } }:
    builtins.derivation ({
      inherit name system;
      builder = "/bin/sh";
      args = [ "-eu" builder ];
    } // env);

  mkRole = system: role:
    mkDerivation {
      name = "hostctl-example-role-${role}";
      inherit system;
      builder = ./builders/role.sh;
      env = { inherit role; roleConfig = roleConfigs.${role}; };
    };

  # The boot parts: one kernel (with its modules) and initrd per version, one systemd
  # for the fleet. Shared by every host with the same version and system.
  mkBootPart = system: name: kind: version: env:
    mkDerivation {
      name = "${name}-${version}";
      inherit system;
      builder = ./builders/boot.sh;
      env = { inherit kind version; } // env;
    };

  mkSystem = { name, system, roles ? [ ], motd ? "", kernel ? "6.1.55", kernelParams ? [ "console=ttyS0" ] }:
    let
      unknownRoles = builtins.filter (role: !(roleConfigs ? ${role})) roles;
      hostName =
        if builtins.match hostNameRegex name == null
        then throw "fleetlib.mkSystem: '${name}' is not a valid host name"
        else if unknownRoles != [ ]
        then throw "fleetlib.mkSystem: host '${name}' has unknown role(s) ${lib.concatStringsSep ", " unknownRoles}; known roles: ${lib.concatStringsSep ", " (builtins.attrNames roleConfigs)}"
        else name;

      nixosVersion = "${lib.version} (${lib.codeName})";

      etc = mkDerivation {
        name = "etc";
        inherit system;
        builder = ./builders/etc.sh;
        env = {
          inherit hostName motd;
          rolePaths = map (mkRole system) roles;
          osRelease = lib.concatLines [
            "NAME=NixOS"
            "ID=nixos"
            ''VERSION="${nixosVersion}"''
            ''VERSION_ID="${lib.release}"''
            ''PRETTY_NAME="NixOS ${nixosVersion} (hostctl example)"''
          ];
        };
      };

      linux = mkBootPart system "linux" "kernel" kernel { };
      initrd = mkBootPart system "initrd-linux" "initrd" kernel { kernel = linux; };
      systemd = mkBootPart system "systemd" "systemd" "254.6" { };

      toplevel = mkDerivation {
        name = "nixos-system-${hostName}-${lib.version}";
        inherit system;
        builder = ./builders/toplevel.sh;
        env = {
          inherit hostName etc nixosVersion linux initrd systemd;
          kernelParams = lib.concatStringsSep " " kernelParams;
          switchScript = builtins.readFile ./builders/switch-to-configuration.sh;
          activateScript = builtins.readFile ./builders/activate.sh;
        };
      };
    in
    {
      # The part of `nixpkgs.lib.nixosSystem`'s result that hostctl reads.
      config = {
        networking.hostName = hostName;
        nixpkgs.system = system;
        nixpkgs.hostPlatform.system = system;
        system.build.toplevel = toplevel;
        system.nixos.version = lib.version;
        system.nixos.release = lib.release;
      };
    };
in
{
  inherit mkSystem;
  roles = builtins.attrNames roleConfigs;
}
