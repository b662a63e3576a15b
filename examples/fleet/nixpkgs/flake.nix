# A stand-in for nixpkgs: no packages, only a `lib` with the few helpers the
# example fleet uses and a version string. It exists so the example evaluates
# offline and so flake.lock has a real `nixpkgs` node for `hostctl check` to lint.
#
# To simulate a nixpkgs bump: change `version` below, then
#   nix flake lock --update-input nixpkgs
# (flake.lock changes, and so does every host's toplevel).
{
  description = "fake nixpkgs for the hostctl example fleet (24.05)";

  outputs = { self }: {
    lib = rec {
      release = "24.05";
      codeName = "Uakari";
      version = "24.05-example";

      concatStringsSep = builtins.concatStringsSep;
      concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
      concatLines = list: concatMapStrings (s: s + "\n") list;
      optionalString = cond: s: if cond then s else "";
      hasSuffix = suffix: s:
        let n = builtins.stringLength s; m = builtins.stringLength suffix;
        in n >= m && builtins.substring (n - m) m s == suffix;
      removeSuffix = suffix: s:
        if hasSuffix suffix s
        then builtins.substring 0 (builtins.stringLength s - builtins.stringLength suffix) s
        else s;
      genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
    };
  };
}
