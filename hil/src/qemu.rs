//! The QEMU machine the harness boots: x86_64 `q35` with OVMF, or aarch64 `virt` with the
//! EDK2 firmware (AAVMF); TCG only (no KVM on the CI machines). The disk is a virtio block
//! device with `cache=writeback`: the guest sees a volatile write cache and its flushes reach
//! the image file, so a power cut (SIGKILL of QEMU) loses exactly what the guest had not
//! flushed — which is what the power-cut scenario needs to be meaningful. The watchdog is an
//! `i6300esb` on PCI whose expiry resets the machine.

use std::path::{Path, PathBuf};

use crate::HilError;

/// The two architectures the appliance ships for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// x86_64 (`q35`, OVMF).
    X86_64,
    /// aarch64 (`virt`, AAVMF).
    Aarch64,
}

impl Arch {
    /// The name used in image file names and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The QEMU system emulator.
    pub fn qemu_binary(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemu-system-x86_64",
            Arch::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// The serial console device name inside the box (the contract's ttyS0 / ttyAMA0).
    pub fn console_tty(self) -> &'static str {
        match self {
            Arch::X86_64 => "ttyS0",
            Arch::Aarch64 => "ttyAMA0",
        }
    }

    /// Where Debian's packages put the UEFI firmware (code, variable-store template), in
    /// order of preference, and the package to install when none is there.
    fn firmware_candidates(self) -> (&'static [(&'static str, &'static str)], &'static str) {
        match self {
            Arch::X86_64 => (
                &[
                    (
                        "/usr/share/OVMF/OVMF_CODE_4M.fd",
                        "/usr/share/OVMF/OVMF_VARS_4M.fd",
                    ),
                    (
                        "/usr/share/OVMF/OVMF_CODE.fd",
                        "/usr/share/OVMF/OVMF_VARS.fd",
                    ),
                ],
                "ovmf",
            ),
            Arch::Aarch64 => (
                &[
                    (
                        "/usr/share/AAVMF/AAVMF_CODE.fd",
                        "/usr/share/AAVMF/AAVMF_VARS.fd",
                    ),
                    (
                        "/usr/share/AAVMF/AAVMF_CODE.no-secboot.fd",
                        "/usr/share/AAVMF/AAVMF_VARS.fd",
                    ),
                ],
                "qemu-efi-aarch64",
            ),
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        match s {
            "x86_64" | "amd64" => Ok(Arch::X86_64),
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            other => Err(format!(
                "unknown architecture {other:?} (x86_64 or aarch64)"
            )),
        }
    }
}

/// UEFI firmware: the read-only code and a writable copy of the variable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// The firmware code (read-only pflash).
    pub code: PathBuf,
    /// The variable-store template (copied per machine: UEFI writes boot entries to it).
    pub vars_template: PathBuf,
}

impl Firmware {
    /// The firmware Debian's package installs for `arch`.
    pub fn find(arch: Arch) -> Result<Firmware, HilError> {
        let (candidates, package) = arch.firmware_candidates();
        candidates
            .iter()
            .find(|(code, vars)| Path::new(code).exists() && Path::new(vars).exists())
            .map(|(code, vars)| Firmware {
                code: code.into(),
                vars_template: vars.into(),
            })
            .ok_or_else(|| HilError::Missing {
                what: format!("UEFI firmware for {}", arch.name()),
                hint: format!("apt-get install {package}"),
            })
    }
}

/// How the virtual LAN is attached to the box's NIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetAttach {
    /// `-netdev stream` connecting to the harness' unix socket.
    Stream(PathBuf),
    /// `-netdev dgram` between QEMU's socket (`local`) and the harness' (`remote`).
    Dgram {
        /// QEMU binds this one.
        local: PathBuf,
        /// The harness listens here.
        remote: PathBuf,
    },
}

/// How the machine boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// UEFI firmware from pflash, which boots the disk (the appliance image).
    Uefi {
        /// The firmware.
        firmware: Firmware,
        /// This machine's copy of the variable store.
        vars: PathBuf,
    },
    /// A kernel and initramfs loaded by QEMU directly (the harness' self-test VM).
    Kernel {
        /// The kernel image.
        kernel: PathBuf,
        /// The initramfs.
        initrd: PathBuf,
        /// The kernel command line.
        append: String,
    },
}

/// Everything needed to start the box in QEMU.
#[derive(Debug, Clone)]
pub struct QemuMachine {
    /// Which emulator and machine type.
    pub arch: Arch,
    /// How it boots.
    pub boot: Boot,
    /// The disk image and its format (`raw` or `qcow2`), if any.
    pub disk: Option<(PathBuf, String)>,
    /// The NIC model (`virtio-net-pci` for the appliance).
    pub nic: String,
    /// The unix socket the serial console connects to (the harness listens).
    pub serial_socket: PathBuf,
    /// The LAN attachment.
    pub net: NetAttach,
    /// The box's MAC address.
    pub mac: String,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Extra arguments from the rig file, appended last.
    pub extra_args: Vec<String>,
}

impl QemuMachine {
    /// The program and arguments that start this machine.
    pub fn command_line(&self) -> (String, Vec<String>) {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        match self.arch {
            // q35's i6300esb is added below; its PCI slot is free on both machines.
            Arch::X86_64 => push(&["-machine", "q35", "-cpu", "max"]),
            // cortex-a72 rather than max: max's pointer authentication makes TCG much slower.
            Arch::Aarch64 => push(&["-machine", "virt,gic-version=3", "-cpu", "cortex-a72"]),
        }
        push(&["-accel", "tcg"]);
        push(&[
            "-m",
            &self.memory_mib.to_string(),
            "-smp",
            &self.cpus.to_string(),
        ]);
        push(&["-nodefaults", "-display", "none", "-monitor", "none"]);
        match &self.boot {
            Boot::Uefi { firmware, vars } => push(&[
                "-drive",
                &format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    firmware.code.display()
                ),
                "-drive",
                &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            ]),
            Boot::Kernel {
                kernel,
                initrd,
                append,
            } => push(&[
                "-kernel",
                &kernel.display().to_string(),
                "-initrd",
                &initrd.display().to_string(),
                "-append",
                append,
            ]),
        }
        if let Some((disk, format)) = &self.disk {
            push(&[
                "-drive",
                &format!(
                    "if=none,id=disk0,file={},format={format},cache=writeback,discard=unmap",
                    disk.display()
                ),
                "-device",
                "virtio-blk-pci,drive=disk0,bootindex=1",
            ]);
        }
        let netdev = match &self.net {
            NetAttach::Stream(path) => format!(
                "stream,id=lan,server=off,addr.type=unix,addr.path={}",
                path.display()
            ),
            NetAttach::Dgram { local, remote } => format!(
                "dgram,id=lan,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                local.display(),
                remote.display()
            ),
        };
        push(&[
            "-netdev",
            &netdev,
            "-device",
            &format!("{},netdev=lan,mac={}", self.nic, self.mac),
        ]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=console,path={},server=off",
                self.serial_socket.display()
            ),
            "-serial",
            "chardev:console",
        ]);
        push(&["-device", "i6300esb", "-action", "watchdog=reset"]);
        push(&["-device", "virtio-rng-pci"]);
        a.extend(self.extra_args.iter().cloned());
        (self.arch.qemu_binary().to_string(), a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(arch: Arch) -> QemuMachine {
        QemuMachine {
            arch,
            boot: Boot::Uefi {
                firmware: Firmware {
                    code: "/fw/CODE.fd".into(),
                    vars_template: "/fw/VARS.fd".into(),
                },
                vars: "/run/vars.fd".into(),
            },
            disk: Some(("/run/disk.qcow2".into(), "qcow2".into())),
            nic: "virtio-net-pci".into(),
            serial_socket: "/run/serial.sock".into(),
            net: NetAttach::Stream("/run/lan.sock".into()),
            mac: "52:54:00:00:02:0a".into(),
            memory_mib: 1024,
            cpus: 2,
            extra_args: vec!["-snapshot".into()],
        }
    }

    fn joined(m: &QemuMachine) -> (String, String) {
        let (p, a) = m.command_line();
        (p, a.join(" "))
    }

    #[test]
    fn x86_64_boots_q35_with_ovmf_a_writeback_disk_and_a_resetting_watchdog() {
        let (program, args) = joined(&machine(Arch::X86_64));
        assert_eq!(program, "qemu-system-x86_64");
        assert!(args.starts_with("-machine q35 "), "{args}");
        assert!(args.contains("-accel tcg"));
        assert!(args.contains("if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd"));
        assert!(args.contains("if=pflash,format=raw,unit=1,file=/run/vars.fd"));
        assert!(args.contains("file=/run/disk.qcow2,format=qcow2,cache=writeback"));
        assert!(
            args.contains(
                "-netdev stream,id=lan,server=off,addr.type=unix,addr.path=/run/lan.sock"
            )
        );
        assert!(args.contains("virtio-net-pci,netdev=lan,mac=52:54:00:00:02:0a"));
        assert!(args.contains(
            "socket,id=console,path=/run/serial.sock,server=off -serial chardev:console"
        ));
        assert!(args.contains("-device i6300esb -action watchdog=reset"));
        assert!(args.ends_with("-snapshot"));
    }

    #[test]
    fn aarch64_uses_virt_and_the_dgram_attachment_names_both_sockets() {
        let mut m = machine(Arch::Aarch64);
        m.net = NetAttach::Dgram {
            local: "/run/q.sock".into(),
            remote: "/run/h.sock".into(),
        };
        let (program, args) = joined(&m);
        assert_eq!(program, "qemu-system-aarch64");
        assert!(args.contains("-machine virt"));
        m.boot = Boot::Kernel {
            kernel: "/k/vmlinuz".into(),
            initrd: "/k/initrd".into(),
            append: "console=ttyAMA0".into(),
        };
        m.disk = None;
        let (_, args) = joined(&m);
        assert!(args.contains("-kernel /k/vmlinuz -initrd /k/initrd -append console=ttyAMA0"));
        assert!(!args.contains("pflash") && !args.contains("disk0"));
        assert!(args.contains("dgram,id=lan,local.type=unix,local.path=/run/q.sock,remote.type=unix,remote.path=/run/h.sock"));
    }

    #[test]
    fn architecture_names_parse_both_spellings() {
        assert_eq!("arm64".parse::<Arch>().unwrap(), Arch::Aarch64);
        assert_eq!("x86_64".parse::<Arch>().unwrap(), Arch::X86_64);
        assert!("riscv64".parse::<Arch>().is_err());
    }
}
