{
  system = "x86_64-linux";
  roles = [ "nginx" ];
  motd = "web2: web frontend, us";
}
