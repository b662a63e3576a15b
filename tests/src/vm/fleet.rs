//! A fleet of guests: a copy of tests/vm/fleet (the NixOS-shaped test systems) in its own
//! git repository, a fresh fleet key, one [`Guest`] per host whose agent trusts it, and
//! fleet.yaml naming the guests' forwarded addresses (written by the same
//! [`inventory_yaml`] as the simulated hosts' fleets).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::guest::Guest;
use super::{agent_unit, Lane};
use crate::http::Request;
use crate::livefleet::{generate_key, inventory_yaml};
use crate::{fail, run, HostctlChild, HostctlRun, TestFleet};

/// [`Guest::create`] or [`Guest::create_uefi`]: (lane, name, agent.yaml, secrets).
type CreateGuest = fn(&Lane, &str, &str, &[(&str, &str)]) -> Guest;

/// Guests, fleet and key; the guests are powered off on drop.
#[derive(Debug)]
pub struct VmFleet {
    pub guests: Vec<Guest>,
    pub fleet: TestFleet,
    pub key_file: PathBuf,
    pub public_key: String,
}

/// The agent.yaml of a guest: the settings agent/nixos/module.nix gives a NixOS host
/// (state in /var/lib/hostctl-agent, the system bus, activations as systemd units), the
/// fleet key, the pre-provisioned identity key on the seed disk, aarch64-linux emulated,
/// and `extra` top-level keys.
pub fn agent_yaml(name: &str, public_key: &str, extra: &str) -> String {
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    format!(
        "hostname: {}\nlisten: \"0.0.0.0:7420\"\ntrusted_keys: [{}]\nstate_dir: /var/lib/hostctl-agent\n\
         identity_key_file: /opt/hostctl/identity.key\n\
         profile: /nix/var/nix/profiles/system\nconfirm_timeout: 30s\nbus: system\nservice_manager: systemd\n\
         binfmt:\n  emulated_systems: [aarch64-linux]\n  nix_conf: /etc/nix/hostctl-binfmt.conf\n{extra}",
        quote(name),
        quote(public_key)
    )
}

impl VmFleet {
    /// A guest for each of `names` (started in parallel), resumed from the lane's template
    /// ([`super::resume`]: for tests that need running hosts, not their boot), with
    /// hosts/<name>.nix = `services` (a Nix attrset body, see tests/vm/fleet/system.nix)
    /// committed, `agent_extra` appended to every agent.yaml and `secrets` on every guest's
    /// seed disk (see [`Guest::create`]).
    pub fn start_resumed(
        lane: &Lane,
        names: &[&str],
        services: &str,
        agent_extra: &str,
        secrets: &[(&str, &str)],
    ) -> VmFleet {
        Self::start_guests(lane, names, services, agent_extra, secrets, super::resume::create_resumed)
    }

    /// Booted UEFI guests (OVMF, systemd-boot; [`Guest::create_uefi`]), otherwise as
    /// [`VmFleet::start_resumed`] without secrets.
    pub fn start_uefi(lane: &Lane, names: &[&str], services: &str, agent_extra: &str) -> VmFleet {
        Self::start_guests(lane, names, services, agent_extra, &[], Guest::create_uefi)
    }

    fn start_guests(
        lane: &Lane,
        names: &[&str],
        services: &str,
        agent_extra: &str,
        secrets: &[(&str, &str)],
        create: CreateGuest,
    ) -> VmFleet {
        let fleet = TestFleet::copy_of("tests/vm/fleet");
        let key_file = fleet.tmp.path().join("fleet.sec");
        let public_key = generate_key(&fleet, "hostctl-vm-test", &key_file);
        let mut guests: Vec<Guest> =
            names.iter().map(|name| create(lane, name, &agent_yaml(name, &public_key, agent_extra), secrets)).collect();
        let start = Instant::now();
        for guest in &mut guests {
            guest.power_on();
        }
        for guest in &mut guests {
            guest.wait_agent(start);
        }
        let vm = VmFleet { guests, fleet, key_file, public_key };
        vm.fleet.write("agent.service", &agent_unit());
        for name in names {
            vm.fleet.write(&format!("hosts/{name}.nix"), services);
        }
        let hosts: Vec<(String, String, String)> =
            vm.guests.iter().map(|g| (g.name.clone(), g.addr.to_string(), String::new())).collect();
        vm.fleet.write("fleet.yaml", &inventory_yaml("30s", &hosts, ""));
        vm.fleet.commit("the VM lane's guests");
        vm
    }

    pub fn guest(&self, name: &str) -> &Guest {
        self.guests.iter().find(|g| g.name == name).unwrap_or_else(|| fail(&format!("no guest {name}")))
    }

    pub fn guest_mut(&mut self, name: &str) -> &mut Guest {
        match self.guests.iter_mut().find(|g| g.name == name) {
            Some(g) => g,
            None => fail(&format!("no guest {name}")),
        }
    }

    /// Rewrites hosts/<name>.nix (a Nix attrset, see tests/vm/fleet/system.nix); commits.
    pub fn set_host(&self, name: &str, text: &str) {
        self.fleet.write(&format!("hosts/{name}.nix"), text);
        self.fleet.commit(&format!("{name}: new configuration"));
    }

    /// `hostctl --key <key> ARGS...` against the guests.
    pub fn hostctl(&self, args: &[&str]) -> HostctlRun {
        let key = self.key_file.display().to_string();
        let mut all = vec!["--key", key.as_str()];
        all.extend_from_slice(args);
        HostctlRun::from(run(&mut self.fleet.hostctl_command(&all, &[])))
    }

    /// `hostctl --key <key> ARGS...` in the background.
    pub fn spawn_hostctl(&self, args: &[&str]) -> HostctlChild {
        let key = self.key_file.display().to_string();
        let mut all = vec!["--key", key.as_str()];
        all.extend_from_slice(args);
        self.fleet.spawn_hostctl(&all)
    }

    /// `GET /v1/status` of a guest's agent, signed with the fleet key.
    pub fn status(&self, name: &str) -> Value {
        self.agent_get(name, "/v1/status")
    }

    /// A signed `GET path` to a guest's agent; fails the test unless it answers 200 JSON.
    pub fn agent_get(&self, name: &str, path: &str) -> Value {
        let guest = self.guest(name);
        let r = Request::new("GET", path, b"")
            .signed(&crate::livefleet::load_key(&self.key_file), name)
            .send_with_timeout(&guest.agent_addr(), Duration::from_secs(20))
            .unwrap_or_else(|e| fail(&format!("GET {path} on {name}: {e}")));
        if r.status != 200 {
            fail(&format!("GET {path} on {name}: {} {}", r.status, r.body));
        }
        serde_json::from_str(&r.body).unwrap_or_else(|e| fail(&format!("GET {path} on {name}: {e}: {}", r.body)))
    }

    /// `nixosConfigurations.<name>`'s toplevel at the working tree.
    pub fn toplevel(&self, name: &str) -> String {
        self.fleet.toplevel(name)
    }
}
