//! The systems the agent can emulate: for each, the ELF header bytes (magic) and mask
//! binfmt_misc matches binaries with, and the qemu user-mode CPU name of its emulator.
//!
//! Magic and mask are those of NixOS (`nixos/lib/binfmt-magics.nix`, the table behind
//! `boot.binfmt.emulatedSystems`), which agree with qemu's `qemu-binfmt-conf.sh`. Each
//! covers the first 20 bytes of the ELF header: `e_ident` (class, byte order, version;
//! the OS/ABI byte masked out) then `e_type` (executable or shared object: the `0xfe`
//! mask byte) and `e_machine`.

/// One emulatable system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// The Nix system, e.g. `aarch64-linux`.
    pub system: &'static str,
    /// qemu's name for the CPU: the emulator is `qemu-<cpu>` / `qemu-<cpu>-static`.
    pub qemu_cpu: &'static str,
    /// The bytes at offset 0 as NixOS writes them; bits outside `mask` are not compared by
    /// the kernel (use [`Arch::masked_magic`] for what the agent registers).
    pub magic: &'static [u8],
    pub mask: &'static [u8],
}

impl Arch {
    /// `magic & mask`: the canonical magic. The kernel stores (and shows) the magic as
    /// written, so registering the masked form makes the entry read back byte for byte
    /// as [`Arch::masked_magic`] whatever bits NixOS set outside the mask.
    pub fn masked_magic(&self) -> Vec<u8> {
        self.magic.iter().zip(self.mask).map(|(m, k)| m & k).collect()
    }
}

// ELF identification shared by every entry: "\x7fELF".
const ELF: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// RISC-V: class, byte order and version exact, OS/ABI ignored, e_type 2 or 3, e_machine
/// exact.
const RISCV_MASK: [u8; 20] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff,
    0xff,
];

/// The table (little-endian e_type/e_machine unless the system is big-endian).
pub const ARCHES: &[Arch] = &[
    Arch {
        system: "aarch64-linux",
        qemu_cpu: "aarch64",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0xb7, 0x00,
        ],
        mask: &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xfe, 0xff,
            0xff, 0xff,
        ],
    },
    Arch { system: "armv6l-linux", qemu_cpu: "arm", magic: &ARM_MAGIC, mask: &ARM_MASK },
    Arch { system: "armv7l-linux", qemu_cpu: "arm", magic: &ARM_MAGIC, mask: &ARM_MASK },
    Arch {
        system: "i686-linux",
        qemu_cpu: "i386",
        // e_machine EM_386 (3), what i686 compilers write, as qemu's i386 entry has it;
        // NixOS's i686-linux entry has EM_486 (6), which no current toolchain emits.
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x03, 0x00,
        ],
        mask: &X86_MASK,
    },
    Arch {
        system: "x86_64-linux",
        qemu_cpu: "x86_64",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x3e, 0x00,
        ],
        mask: &X86_MASK,
    },
    Arch {
        system: "riscv32-linux",
        qemu_cpu: "riscv32",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0xf3, 0x00,
        ],
        mask: &RISCV_MASK,
    },
    Arch {
        system: "riscv64-linux",
        qemu_cpu: "riscv64",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0xf3, 0x00,
        ],
        mask: &RISCV_MASK,
    },
    Arch {
        system: "powerpc64le-linux",
        qemu_cpu: "ppc64le",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x15, 0x00,
        ],
        mask: &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff,
            0xff, 0x00,
        ],
    },
    Arch {
        system: "mips64el-linux",
        qemu_cpu: "mips64el",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x08, 0x00,
        ],
        mask: &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff,
            0xff, 0xff,
        ],
    },
    Arch {
        system: "s390x-linux",
        qemu_cpu: "s390x",
        // Big-endian: e_type 0x0002 and e_machine 0x0016 (EM_S390) high byte first.
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x02, 0x00, 0x16,
        ],
        mask: &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
            0xff, 0xff,
        ],
    },
    Arch {
        system: "loongarch64-linux",
        qemu_cpu: "loongarch64",
        magic: &[
            ELF[0], ELF[1], ELF[2], ELF[3], 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x02, 0x00, 0x02, 0x01,
        ],
        mask: &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfc, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff,
            0xff, 0xff,
        ],
    },
];

/// 32-bit little-endian ARM (EM_ARM 0x28); armv6l and armv7l binaries look alike.
const ARM_MAGIC: [u8; 20] = [
    ELF[0], ELF[1], ELF[2], ELF[3], 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00,
    0x28, 0x00,
];
const ARM_MASK: [u8; 20] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xfe, 0xff, 0xff,
    0xff,
];
/// x86 entries also accept byte order and version 0 (`0xfe` at bytes 5 and 6).
const X86_MASK: [u8; 20] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfe, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff,
    0xff,
];

/// The table entry for `system`.
pub fn arch(system: &str) -> Option<&'static Arch> {
    ARCHES.iter().find(|a| a.system == system)
}

/// The systems of the table, for error messages.
pub fn known_systems() -> String {
    ARCHES.iter().map(|a| a.system).collect::<Vec<_>>().join(", ")
}

/// Systems a host of `host_system` runs natively, so emulating them would hijack its own
/// binaries: itself, and 32-bit x86 on x86_64.
pub fn runs_natively(host_system: &str, system: &str) -> bool {
    system == host_system || (host_system == "x86_64-linux" && system == "i686-linux")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 20 bytes of an ELF executable header for the given class (1 = 32-bit,
    /// 2 = 64-bit), byte order (1 = little, 2 = big) and e_machine.
    fn elf_header(class: u8, data: u8, machine: u16, os_abi: u8) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', class, data, 1, os_abi, 0, 0, 0, 0, 0, 0, 0, 0];
        let (e_type, e_machine) = if data == 1 {
            (2u16.to_le_bytes(), machine.to_le_bytes())
        } else {
            (2u16.to_be_bytes(), machine.to_be_bytes())
        };
        h.extend_from_slice(&e_type);
        h.extend_from_slice(&e_machine);
        h
    }

    /// The kernel's test (fs/binfmt_misc.c): every bit under the mask equals the magic's.
    fn kernel_matches(arch: &Arch, magic: &[u8], header: &[u8]) -> bool {
        magic.iter().zip(arch.mask).zip(header).all(|((m, k), h)| (m ^ h) & k == 0)
    }

    #[test]
    fn magic_and_mask_lengths_agree_and_the_masked_magic_is_a_fixed_point() {
        for arch in ARCHES {
            assert_eq!(arch.magic.len(), arch.mask.len(), "{}", arch.system);
            assert_eq!(arch.magic.len(), 20, "{}", arch.system);
            assert_eq!(&arch.magic[..4], b"\x7fELF", "{}", arch.system);
            let masked = arch.masked_magic();
            let again: Vec<u8> = masked.iter().zip(arch.mask).map(|(m, k)| m & k).collect();
            assert_eq!(masked, again, "{}", arch.system);
            // Masking changes nothing the kernel compares.
            assert!(kernel_matches(arch, &masked, arch.magic), "{}", arch.system);
        }
    }

    #[test]
    fn the_masked_magic_is_the_table_magic_except_x86_byte_order_bits() {
        for arch in ARCHES {
            let differs: Vec<usize> = arch
                .masked_magic()
                .iter()
                .zip(arch.magic)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(i, _)| i)
                .collect();
            let expected: &[usize] = if arch.mask == X86_MASK { &[5, 6] } else { &[] };
            assert_eq!(differs, expected, "{}", arch.system);
        }
    }

    #[test]
    fn each_entry_matches_real_headers_of_its_machine_and_no_other_entry_does() {
        // (system, class, byte order, e_machine) per the ELF specification.
        let machines = [
            ("aarch64-linux", 2, 1, 183),
            ("armv7l-linux", 1, 1, 40),
            ("i686-linux", 1, 1, 3),
            ("x86_64-linux", 2, 1, 62),
            ("riscv32-linux", 1, 1, 243),
            ("riscv64-linux", 2, 1, 243),
            ("powerpc64le-linux", 2, 1, 21),
            ("mips64el-linux", 2, 1, 8),
            ("s390x-linux", 2, 2, 22),
            ("loongarch64-linux", 2, 1, 258),
        ];
        for (system, class, data, machine) in machines {
            // The OS/ABI byte (GNU/Linux = 3 as well as SYSV = 0) must not matter.
            for os_abi in [0, 3] {
                let header = elf_header(class, data, machine, os_abi);
                let matching: Vec<&str> =
                    ARCHES.iter().filter(|a| kernel_matches(a, &a.masked_magic(), &header)).map(|a| a.system).collect();
                let expected: Vec<&str> =
                    if system == "armv7l-linux" { vec!["armv6l-linux", "armv7l-linux"] } else { vec![system] };
                assert_eq!(matching, expected, "{system} os_abi {os_abi}");
            }
        }
        // Shared objects (e_type 3, e.g. position-independent executables) match too.
        let mut pie = elf_header(2, 1, 183, 0);
        pie[16] = 3;
        let aarch64 = arch("aarch64-linux").unwrap();
        assert!(kernel_matches(aarch64, &aarch64.masked_magic(), &pie));
    }

    #[test]
    fn lookups() {
        assert_eq!(arch("aarch64-linux").map(|a| a.qemu_cpu), Some("aarch64"));
        assert_eq!(arch("powerpc64le-linux").map(|a| a.qemu_cpu), Some("ppc64le"));
        assert!(arch("vax-linux").is_none());
        assert!(known_systems().starts_with("aarch64-linux, armv6l-linux"));
        assert!(runs_natively("x86_64-linux", "x86_64-linux"));
        assert!(runs_natively("x86_64-linux", "i686-linux"));
        assert!(!runs_natively("x86_64-linux", "aarch64-linux"));
        assert!(!runs_natively("aarch64-linux", "i686-linux"));
    }
}
