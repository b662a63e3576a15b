# An aarch64 host: building it needs an aarch64-linux builder or binfmt
# emulation (see ../../agents/db1.yaml); an x86_64 machine can evaluate it only.
{
  system = "aarch64-linux";
  roles = [ "edge-proxy" ];
  motd = "arm1: edge proxy";
}
