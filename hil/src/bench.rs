//! The bench: one box under test with the harness' three instruments attached — its power
//! switch, its serial console and the virtual LAN — plus the run's output directory. The
//! scenarios use only this, so they run the same on QEMU and on a real box.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::HilError;
use crate::disk::{self, Ext4Partition};
use crate::lan::link::{DgramLink, FrameLink, PacketLink, StreamLink};
use crate::lan::{LanPlan, VirtualLan};
use crate::power::{HookPower, Power, QemuPower, ensure_vars_copy};
use crate::qemu::{Arch, Boot, Firmware, NetAttach, QemuMachine};
use crate::rig::Rig;
use crate::serial::{Console, Pattern, SerialLine, SerialSource};
use crate::smtp::Reply;

/// The box's MAC on the QEMU rig (QEMU's own prefix, the box's address as the last octet).
pub const BOX_MAC: &str = "52:54:00:00:02:0a";

/// The gateway config on the data partition (the contract's path, relative to the partition).
pub const CONFIG_ON_DATA: &str = "/config/portcullis.toml";

/// A line the kernel prints at the start of every boot (on both architectures).
pub fn boot_marker() -> Pattern {
    Pattern::regex(r"Linux version \d")
}

/// The box under test and its instruments (see the module docs).
pub struct Bench {
    /// The box's architecture.
    pub arch: Arch,
    /// The rig settings.
    pub rig: Rig,
    /// The power switch.
    pub power: Box<dyn Power>,
    /// The serial console.
    pub serial: Box<dyn SerialLine>,
    /// The virtual LAN.
    pub lan: VirtualLan,
    /// The run's output directory.
    pub out: PathBuf,
    /// The working copy of the disk (QEMU rigs only).
    pub disk: Option<PathBuf>,
}

impl Bench {
    /// A QEMU box booting a fresh working copy of `image`.
    pub fn qemu(arch: Arch, image: &Path, rig: Rig, out: &Path) -> Result<Bench, HilError> {
        let run = out.join("run");
        std::fs::create_dir_all(&run)
            .map_err(|e| HilError::io(format!("creating {}", run.display()), e))?;
        let firmware = Firmware::find(arch)?;
        let vars = run.join("uefi-vars.fd");
        let _ = std::fs::remove_file(&vars);
        ensure_vars_copy(&firmware.vars_template, &vars)?;
        let disk_path = run.join(format!("disk-{}.raw", arch.name()));
        tracing::info!(image = %image.display(), copy = %disk_path.display(), "making a working copy of the image");
        disk::working_copy(image, &disk_path)?;
        if !rig.debug.kernel_options.is_empty() {
            let entries = disk::append_kernel_options(&disk_path, &rig.debug.kernel_options)?;
            tracing::info!(options = %rig.debug.kernel_options, ?entries, "kernel options added to the working copy");
        }
        let (net, link) = attach_lan(&rig, &run)?;
        let serial_socket = run.join("serial.sock");
        let serial = Console::open(
            SerialSource::UnixListener(serial_socket.clone()),
            &rig.serial.line_ending,
        )?;
        let machine = QemuMachine {
            arch,
            boot: Boot::Uefi { firmware, vars },
            disk: Some((disk_path.clone(), "raw".into())),
            nic: "virtio-net-pci".into(),
            serial_socket,
            net,
            mac: BOX_MAC.into(),
            memory_mib: rig.qemu.memory_mib,
            cpus: rig.qemu.cpus,
            extra_args: rig.qemu.extra_args.clone(),
        };
        let power = QemuPower::new(machine, run.join("qmp.sock"), out.join("qemu.log"));
        let lan = VirtualLan::start(LanPlan::contract(), link)?;
        Ok(Bench {
            arch,
            rig,
            power: Box::new(power),
            serial: Box::new(serial),
            lan,
            out: out.to_path_buf(),
            disk: Some(disk_path),
        })
    }

    /// A real box as the rig file's `[box]` describes it.
    pub fn real_box(arch: Arch, rig: Rig, out: &Path) -> Result<Bench, HilError> {
        let Some(b) = rig.real_box.clone() else {
            return Err(HilError::Rig {
                path: PathBuf::from("(rig)"),
                reason: "no [box] section".into(),
            });
        };
        let serial = Console::open(
            SerialSource::Device {
                path: b.serial.clone(),
                baud: b.baud,
            },
            &rig.serial.line_ending,
        )?;
        let link = PacketLink::open(&b.interface).map_err(|e| {
            HilError::io(
                format!(
                    "opening a raw socket on {} (needs CAP_NET_RAW)",
                    b.interface
                ),
                e,
            )
        })?;
        let lan = VirtualLan::start(LanPlan::contract(), Box::new(link))?;
        let power = HookPower::new(b.power.on, b.power.off, b.power.button, b.power.status);
        Ok(Bench {
            arch,
            rig,
            power: Box::new(power),
            serial: Box::new(serial),
            lan,
            out: out.to_path_buf(),
            disk: None,
        })
    }

    /// The harness' self-test VM (see `hil/devvm/build`): a kernel and a busybox initramfs
    /// playing a tiny box at 192.0.2.10, with an e1000 NIC (its driver is in the initramfs);
    /// `net` is the LAN attachment, `stream` or `dgram`.
    pub fn devvm(
        kernel: &Path,
        initrd: &Path,
        definitions: &Path,
        net: &str,
        out: &Path,
    ) -> Result<Bench, HilError> {
        let mut rig = Rig::default();
        rig.qemu.net = net.to_string();
        let run = out.join("run");
        std::fs::create_dir_all(&run)
            .map_err(|e| HilError::io(format!("creating {}", run.display()), e))?;
        let (net, link) = attach_lan(&rig, &run)?;
        let serial_socket = run.join("serial.sock");
        let serial = Console::open(SerialSource::UnixListener(serial_socket.clone()), "\r")?;
        let machine = QemuMachine {
            arch: Arch::X86_64,
            boot: Boot::Kernel {
                kernel: kernel.to_path_buf(),
                initrd: initrd.to_path_buf(),
                append: "console=ttyS0,115200 panic=-1".into(),
            },
            disk: None,
            nic: "e1000".into(),
            serial_socket,
            net,
            mac: BOX_MAC.into(),
            memory_mib: 256,
            cpus: 1,
            extra_args: Vec::new(),
        };
        let power = QemuPower::new(machine, run.join("qmp.sock"), out.join("qemu.log"));
        let mut plan = LanPlan::contract();
        plan.definitions_dir = Some(definitions.to_path_buf());
        let lan = VirtualLan::start(plan, link)?;
        Ok(Bench {
            arch: Arch::X86_64,
            rig,
            power: Box::new(power),
            serial: Box::new(serial),
            lan,
            out: out.to_path_buf(),
            disk: None,
        })
    }

    /// Sends the serial and LAN transcripts to `OUT/<scenario>/` from now on.
    pub fn transcripts_for(&mut self, scenario: &str) -> Result<PathBuf, HilError> {
        let dir = self.out.join(scenario);
        self.serial.transcript_to(&dir.join("serial.log"))?;
        self.lan.transcript_to(&dir)?;
        Ok(dir)
    }

    /// The box's address on the LAN.
    pub fn box_ip(&self) -> Ipv4Addr {
        self.lan.plan().box_ip
    }

    /// Polls the box's port 25 over the LAN until it answers with a `220` banner, for at most
    /// `timeout`; the time it took and the banner.
    pub fn wait_smtp_ready(&self, timeout: Duration) -> Result<(Duration, Reply), String> {
        let start = Instant::now();
        let frames_before = self.lan.frames_from_box();
        let mut last = String::from("no answer");
        while start.elapsed() < timeout {
            let attempt = Instant::now();
            match self.lan.probe_smtp(0, Duration::from_secs(10)) {
                Some(r) if r.code == 220 => return Ok((start.elapsed(), r)),
                Some(r) => last = format!("banner {r}"),
                None => {}
            }
            // A refused connection returns at once; do not hammer the box while it boots.
            if let Some(rest) = Duration::from_secs(1).checked_sub(attempt.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        let frames = self.lan.frames_from_box() - frames_before;
        let network = if frames == 0 {
            "the box sent no Ethernet frame at all meanwhile: its network is not up".to_string()
        } else {
            format!("the box sent {frames} Ethernet frames meanwhile")
        };
        Err(format!(
            "no 220 banner from {}:25 within {}s ({last}; {network}); the box's journal is in the scenario's serial.log",
            self.box_ip(),
            timeout.as_secs()
        ))
    }

    /// Turns the box on if it is off.
    pub fn ensure_on(&mut self) -> Result<(), HilError> {
        if !self.power.is_on() {
            self.power.on()?;
        }
        Ok(())
    }

    /// Presses the power button and waits for the box to turn itself off.
    pub fn shut_down(&mut self) -> Result<(), String> {
        if !self.power.is_on() {
            return Ok(());
        }
        self.power.press_button().map_err(|e| e.to_string())?;
        if self.power.wait_off(self.rig.timeouts.shutdown) {
            Ok(())
        } else {
            Err(format!(
                "the box did not turn itself off within {}s of the power button",
                self.rig.timeouts.shutdown.as_secs()
            ))
        }
    }

    /// The data partition of the working disk (QEMU rigs, box off).
    pub fn data_partition(&self) -> Result<Ext4Partition, String> {
        let disk = self
            .disk
            .as_ref()
            .ok_or("the box's disk is not reachable on this rig (a real box)")?;
        let fs = Ext4Partition::open(disk, "data").map_err(|e| e.to_string())?;
        fs.require_clean().map_err(|e| e.to_string())?;
        Ok(fs)
    }
}

fn attach_lan(rig: &Rig, run: &Path) -> Result<(NetAttach, Box<dyn FrameLink>), HilError> {
    if rig.qemu.net == "dgram" {
        let (ours, theirs) = (run.join("lan-hil.sock"), run.join("lan-qemu.sock"));
        let _ = std::fs::remove_file(&theirs);
        let link = DgramLink::bind(&ours, &theirs)
            .map_err(|e| HilError::io(format!("binding {}", ours.display()), e))?;
        Ok((
            NetAttach::Dgram {
                local: theirs,
                remote: ours,
            },
            Box::new(link),
        ))
    } else {
        let path = run.join("lan.sock");
        let link = StreamLink::listen(&path)
            .map_err(|e| HilError::io(format!("listening on {}", path.display()), e))?;
        Ok((NetAttach::Stream(path), Box::new(link)))
    }
}
