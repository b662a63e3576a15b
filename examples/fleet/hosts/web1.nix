# One file per host: hosts/<name>.nix becomes nixosConfigurations.<name>.
# Inventory data (address, tags, health checks) lives in ../fleet.yaml.
{
  system = "x86_64-linux";
  roles = [ "nginx" ];
  motd = "web1: web frontend, eu";
}
