{
  system = "x86_64-linux";
  roles = [ "postgresql" ];
  motd = "db1: database, eu (also emulates aarch64-linux to build for arm1)";
}
