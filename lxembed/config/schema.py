"""The board and recipe keys: one Setting each (type, default, allowed values and help).

Parsing, validation, defaults, `lxembed show` and docs/config.md all come from these tables;
adding a key is one entry here.
"""

from __future__ import annotations

from .container_schema import CONTAINER_FIELDS
from .network_schema import NETWORK_DESCRIPTION_SETTINGS
from .settings import Setting

QEMU_FIELDS = (
    Setting("machine", "str", None, "qemu -M value (default: the architecture's)"),
    Setting("cpu", "str", None, "qemu -cpu value (default: the architecture's)"),
    Setting("memory", "int", 256, "guest RAM in MiB"),
    Setting("smp", "int", 1, "guest CPUs"),
    Setting("console", "str", None, "kernel console device (default: the architecture's)"),
    Setting("serial", "int", 0, "the qemu serial port the console is on (raspi3b: 1, the mini "
            "UART; earlier ports are left unconnected)"),
    Setting("kernel_package", "str", None, "Debian kernel package (default: the architecture's)"),
    Setting("kernel_arch", "str", None, "Debian arch of the kernel (armel boots the armhf one)"),
    Setting("modules", "list", [], "kernel modules every image for this board loads"),
    Setting("append", "str", "", "extra kernel command line"),
    Setting("nic", "str", None, "qemu NIC model (default: the architecture's); \"none\": the "
            "machine has no network qemu can give it (network checks are skipped)"),
    Setting("dtb", "str", None, "device tree from the kernel package's dtb directory "
            "(broadcom/bcm2837-rpi-3-b.dtb), given to qemu -dtb"),
    Setting("disk", "str", "virtio", "how `--root` attaches a disk image",
            choices=("virtio", "sd")),
    Setting("extra_args", "list", [], "extra qemu arguments"),
    Setting("watchdog", "str", None, "the board's watchdog as a qemu device and the kernel "
            "module that drives it (i6300esb on x86 and arm virt), with `-action watchdog=reset`; "
            "it counts only once an image opens it (a recipe's [watchdog])"),
)

FLASH_FIELDS = (
    Setting("type", "str", "nor", "raw flash kind", choices=("nor", "nand")),
    Setting("erase_block", "size", "64KiB", "physical erase block (UBI's PEB; jffs2 -e)"),
    Setting("page_size", "size", None, "minimum I/O unit (default: 1 on NOR, 2048 on NAND)"),
    Setting("sub_page_size", "size", None, "NAND sub-page, where UBI's VID header goes "
            "(default: page_size)"),
    Setting("size", "size", None, "bytes of flash the root filesystem may take (UBI's maximum "
            "LEB count; larger images are refused)"),
    Setting("ubi_mtd", "str", "ubi", "NAND: the MTD partition that holds the UBI image (the "
            "firmware format's `ubi part` in U-Boot and ubi.mtd= for Linux)"),
)

SDCARD_FIELDS = (
    Setting("firmware_package", "str", None, "Debian package with the boot firmware"),
    Setting("firmware_dir", "str", "/usr/lib/raspi-firmware", "where that package keeps it"),
    Setting("dtb", "str", None, "device tree copied to the boot partition, from the kernel "
            "package's dtb directory"),
    Setting("boot_size", "size", "64MiB", "the FAT boot partition"),
    Setting("config", "str", "", "config.txt for the boot firmware"),
    Setting("cmdline", "str", "console=ttyAMA0,115200 root=/dev/mmcblk0p2 rootfstype=ext4 "
            "rootwait", "cmdline.txt: the kernel command line"),
    Setting("modules", "list", [], "kernel modules the boot initramfs loads to reach the root "
            "partition (SD host drivers)"),
)

UBOOT_FIELDS = (
    Setting("unsupported", "str", None, "why this board cannot boot through U-Boot (its "
            "u-boot-qemu build lacks what lxembed needs): what `--boot uboot` and the fit "
            "format say when refusing it"),
    Setting("firmware", "str", None, "the U-Boot build qemu runs as its firmware (-bios), from "
            "Debian's u-boot-qemu (/usr/lib/u-boot/qemu_arm64/u-boot.bin)"),
    Setting("kernel_load", "str", None, "load and entry address of the kernel in the FIT "
            "(U-Boot's kernel_addr_r); boot.scr loads the FIT 64 KiB below it, so the kernel "
            "is booted in place"),
    Setting("fit_addr", "str", None, "where boot.scr loads the FIT instead (default: 64 KiB "
            "below kernel_load): a kernel that decompresses itself over what follows it "
            "(armhf's zImage) needs the FIT and its initramfs out of the way"),
    Setting("verify", "bool", True, "this U-Boot build checks FIT signatures "
            "(CONFIG_FIT_SIGNATURE): a signed FIT's key goes into its control dtb"),
    Setting("disk", "str", "virtio-blk-device", "the qemu device the boot disk is attached as "
            "(one this U-Boot has a driver for)"),
    Setting("interface", "str", "virtio", "U-Boot's name of that disk's interface (`virtio "
            "read`, `load virtio 0:3`)"),
    Setting("linux_disk", "str", "/dev/vda", "Linux's name of the same disk; partition N is "
            "this plus N (the firmware format's root= and /etc/fw_env.config)"),
    Setting("disk_size", "size", None, "the boot medium's size (the eMMC or SD card the firmware "
            "format's disk is written to): its slots and data partition must fit"),
    Setting("scratch_addr", "str", "0x48000000", "RAM the firmware's boot script may use for "
            "its boot-state buffers (256 KiB)"),
)

KERNEL_FIELDS = (
    Setting("package", "str", None, "the board's kernel as a Debian package, what the kernel's "
            "`make bindeb-pkg` writes (linux-image-RELEASE_*.deb: /boot/vmlinuz-RELEASE, "
            "/lib/modules/RELEASE, its config and device trees); relative to the board file"),
    Setting("image", "str", None, "or the kernel as files: its image (arm64 Image, ARM zImage, "
            "x86 bzImage or an ELF vmlinux; gzip-compressed too), relative to the board file"),
    Setting("modules", "str", None, "with `image`: its `make modules_install` tree, a "
            "directory (lib/modules/RELEASE, or the INSTALL_MOD_PATH above it) or a tarball of "
            "one (.tar, .tar.gz, .tar.xz, .tar.zst)"),
    Setting("config", "str", None, "the kernel's .config, for `kernel-check` and the recipe "
            "checks of builds (default: the package's /boot/config-RELEASE)"),
    Setting("dtbs", "str", None, "a directory of device trees that [qemu] dtb and [sdcard] dtb "
            "name files in (default: the package's /usr/lib/linux-image-RELEASE)"),
)

BOARD_SETTINGS = (
    Setting("description", "str", "", "one line about the board"),
    Setting("arch", "str", None, "Debian architecture of the userland",
            choices=("amd64", "i386", "arm64", "armhf", "armel", "mipsel", "mips64el", "riscv64")),
    Setting("suite", "str", "bookworm", "Debian suite the board is pinned to"),
    Setting("components", "list", ["main"], "archive components packages may come from "
            "(non-free-firmware for boot firmware)"),
    Setting("soc", "str", "", "SoC or machine name, for real hardware"),
    Setting("qemu", "table", None, "qemu-system profile; absent for real hardware",
            fields=QEMU_FIELDS),
    Setting("kernel_config", "str", None, "a vendor kernel's .config (relative to the board "
            "file): what `kernel-check` and builds check recipes against when the board boots "
            "no Debian kernel and has no [kernel]"),
    Setting("kernel", "table", None, "the board's own kernel (a vendor kernel) instead of a "
            "Debian one: its modules go into images, qemu boots it, recipes are checked against "
            "its config; docs/qemu.md", fields=KERNEL_FIELDS),
    Setting("flash", "table", None, "raw flash geometry, for the jffs2 and ubi formats",
            fields=FLASH_FIELDS),
    Setting("sdcard", "table", None, "the board's SD card layout, for the sdcard format",
            fields=SDCARD_FIELDS),
    Setting("uboot", "table", None, "the board's U-Boot in qemu, for the fit format's load "
            "addresses and `--boot uboot`; absent (or `unsupported`): it has none",
            fields=UBOOT_FIELDS),
)

USER_FIELDS = (
    Setting("name", "str", None, "login name"),
    Setting("uid", "int", None, "user id"),
    Setting("gid", "int", None, "group id (default: uid)"),
    Setting("home", "str", None, "home directory (default: /home/NAME)"),
    Setting("shell", "str", "/bin/sh", "login shell"),
    Setting("groups", "list", [], "supplementary groups"),
)

CHECK_FIELDS = (
    Setting("name", "str", None, "check name"),
    Setting("command", "str", None, "shell command run in the guest; exit status 0 passes"),
    Setting("expect", "str", "", "a regular expression the output must match"),
    Setting("user", "bool", True, "also run under qemu-user (no kernel)"),
)

# How the init knows a service (or a service container) is ready and stays healthy.
PROBE_FIELDS = (
    Setting("health_command", "str", None, "shell command whose exit status 0 means ready and "
            "healthy (e.g. an HTTP GET); run on the device"),
    Setting("health_interval", "float", 10.0, "seconds between health probes once ready"),
    Setting("health_timeout", "float", 5.0, "seconds one health_command may take"),
    Setting("unhealthy_after", "float", 30.0, "seconds of failing probes before a respawning "
            "service is restarted"),
    Setting("ready_timeout", "float", 0.0, "seconds a start may take to be ready before it "
            "counts as failed (a respawning service is restarted; 0: no limit)"),
)

SERVICE_FIELDS = (
    Setting("name", "str", None, "service name"),
    Setting("command", "list", None, "argv"),
    Setting("type", "str", "simple", "how it runs", choices=("oneshot", "simple", "respawn")),
    Setting("after", "list", [], "services that must start (oneshot: finish) first"),
    Setting("environment", "dict", {}, "extra environment"),
    Setting("workdir", "str", "/", "working directory"),
    Setting("user", "str", "root", "user name or uid"),
    Setting("stop_timeout", "float", 5.0, "seconds between SIGTERM and SIGKILL at shutdown"),
    Setting("main", "bool", False, "the app: its exit stops the rest and ends the init with its "
            "status; it is stopped first (at most one)"),
    Setting("requires", "list", [], "services that must be ready (oneshot: done) first; it is "
            "not started while they are not"),
    Setting("ready_file", "str", None, "ready (and healthy) while this file exists"),
) + PROBE_FIELDS

INTERFACE_FIELDS = (
    Setting("name", "str", None, "interface name"),
    Setting("dhcp", "bool", False, "take a DHCP lease and keep it (the Python init's own "
            "client renews it; busybox init: ifup's udhcpc daemon)"),
    Setting("wait", "bool", True, "with dhcp: services start once it has its lease; false: "
            "the init takes the lease in the background while they start, for devices whose "
            "services do not need it"),
    Setting("ipv4", "list", [], "static IPv4 addresses with prefix (10.0.0.2/24)"),
    Setting("gateway4", "str", None, "IPv4 default gateway"),
    Setting("ipv6", "list", [], "static IPv6 addresses with prefix"),
    Setting("gateway6", "str", None, "IPv6 default gateway"),
    Setting("vlan", "int", None, "make NAME as a VLAN on `link` with this id"),
    Setting("link", "str", None, "parent interface of a VLAN"),
)

NETWORK_FIELDS = (
    Setting("interfaces", "tables", [], "device network interfaces", fields=INTERFACE_FIELDS),
)

EXT4_FIELDS = (
    Setting("size", "size", None, "fixed image size (bytes, or 64MiB); unset: content plus "
            "`headroom`"),
    Setting("headroom", "str", "20%", "free space on top of the content: a percentage of it "
            "(\"20%\") or a size (\"8MiB\")"),
    Setting("block_size", "int", 4096, "filesystem block size: 1024, 2048 or 4096"),
    Setting("journal", "bool", True, "an ext4 journal (1024 blocks at least)"),
)

SQUASHFS_FIELDS = (
    Setting("compressor", "str", "zstd", "mksquashfs -comp; every Debian kernel reads these",
            choices=("zstd", "xz", "gzip", "lz4", "lzo")),
    Setting("block_size", "size", "256K", "mksquashfs -b: a power of two from 4K to 1M"),
    Setting("level", "int", None, "compression level (zstd 1-22, gzip 1-9; default: the "
            "strongest for zstd and gzip)"),
)

SERVICE_CONTAINER_FIELDS = (
    Setting("name", "str", None, "container name on the device (lxc-info -n NAME)"),
    Setting("recipe", "str", None, "the container recipe (bind-host), by name or path relative "
            "to this recipe"),
    Setting("after", "list", [], "containers or device services started first: it waits "
            "until they are ready, or have failed once"),
    Setting("requires", "list", [], "containers or device services that must be ready first"),
    Setting("stop_timeout", "float", 10.0, "seconds between its halt signal and SIGKILL"),
) + tuple(s if s.key != "ready_timeout" else
          Setting("ready_timeout", "float", 30.0, "seconds a start may take to be ready (its "
                  "init's ready file, or health_command) before it is restarted with backoff")
          for s in PROBE_FIELDS)

WATCHDOG_FIELDS = (
    Setting("device", "str", "/dev/watchdog", "the watchdog device the init feeds"),
    Setting("timeout", "float", 10.0, "seconds without a feed before the hardware resets the "
            "device (the init feeds it every third of that, from its own loop)"),
)

UBI_FIELDS = (
    Setting("compressor", "str", "lzo", "mkfs.ubifs -x", choices=("lzo", "zlib", "zstd", "none")),
)

FIT_FIELDS = (
    Setting("key", "str", None, "sign the FIT's configuration with this key: a directory "
            "relative to the recipe holding NAME.key and NAME.crt, NAME being the directory's "
            "name (keys/dev: keys/dev/dev.key, keys/dev/dev.crt)"),
)

FIRMWARE_FIELDS = (
    Setting("version", "str", "0", "the firmware's version: in /etc/lxembed/firmware.json, the "
            "update bundle and `lxembed inspect`"),
    Setting("key", "str", None, "sign the update bundle with this key (required: a device takes "
            "only signed updates): a directory relative to the recipe holding NAME.key and "
            "NAME.crt, as [fit] key; its certificate goes into the image as the update keyring"),
    Setting("slot_size", "size", "128MiB", "each root slot (A and B): fixed for the device's "
            "life, so leave room for the updates to come"),
    Setting("data_size", "size", "64MiB", "the data partition: the overlay's upper layer"),
    Setting("tries", "int", 3, "boot attempts a slot gets before U-Boot falls back to the "
            "other (1 to 9)"),
    Setting("kernel_size", "size", None, "NAND boards: each kernel volume (kernel_a, "
            "kernel_b) holding the slot's FIT; default: the FIT's size and half again, in whole "
            "MiB. Fixed for the device's life, like slot_size"),
    Setting("trial_timeout", "float", 120.0, "seconds a slot booted on trial (after an update) "
            "has to become healthy before the init reboots it, counting a failed attempt"),
)

RECIPE_SETTINGS = (
    Setting("description", "str", "", "one line about the image"),
    Setting("base", "str", None, "recipe this one extends (lists are appended, values replaced)"),
    Setting("packages", "list", [], "Debian packages installed whole (with their dependencies)"),
    Setting("debs", "list", [], "local .deb files installed whole (paths relative to the recipe)"),
    Setting("pick", "list", [], "files taken from `pick_packages` with their exact ELF closure"),
    Setting("pick_packages", "list", [], "packages that `pick` takes files from"),
    Setting("data", "list", [], "data paths copied along with picked files"),
    Setting("files", "dict", {}, "extra files: path = content"),
    Setting("overlays", "list", [], "trees under overlays/NAME laid over the rootfs"),
    Setting("hostname", "str", "lxembed", "the system's host name"),
    Setting("init", "str", "busybox", "PID 1", choices=("busybox", "python")),
    Setting("exclude", "list", ["/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                                "/usr/share/locale/*", "/usr/share/lintian/*",
                                "/usr/share/bug/*", "/usr/share/initramfs-tools/*"],
            "glob patterns removed from the image"),
    Setting("users", "tables", [], "users besides root", fields=USER_FIELDS),
    Setting("modules", "list", [], "kernel modules the image loads at boot"),
    Setting("network", "table", None, "device networking", fields=NETWORK_FIELDS),
    Setting("services", "tables", [], "services started by the Python init", fields=SERVICE_FIELDS),
    Setting("checks", "tables", [], "extra checks `lxembed test` runs", fields=CHECK_FIELDS),
    Setting("container", "table", None, "containers: docs/containers.md", fields=CONTAINER_FIELDS),
    Setting("service_containers", "tables", [], "the device's own service containers, each a "
            "service of the device's init: started after the device's oneshots and their "
            "`after`/`requires`, independent ones in parallel; restarted with backoff when they "
            "stop or stay unhealthy; stopped in reverse dependency order",
            fields=SERVICE_CONTAINER_FIELDS),
    Setting("host_network", "table", None, "host networking, as a standalone description: "
            "docs/networking.md", fields=NETWORK_DESCRIPTION_SETTINGS),
    Setting("watchdog", "table", None, "the Python init feeds the board's hardware watchdog; "
            "a hung device resets", fields=WATCHDOG_FIELDS),
    Setting("ext4", "table", None, "how the ext4 format is made", fields=EXT4_FIELDS),
    Setting("squashfs", "table", None, "how the squashfs format is made", fields=SQUASHFS_FIELDS),
    Setting("ubi", "table", None, "how the ubi format is made (geometry: the board's [flash])",
            fields=UBI_FIELDS),
    Setting("fit", "table", None, "how the fit format is made", fields=FIT_FIELDS),
    Setting("firmware", "table", None, "the A/B firmware format: slots, data partition, boot "
            "attempts, update signing (docs/firmware.md)", fields=FIRMWARE_FIELDS),
    Setting("max_size", "dict", {}, "size budgets by format (squashfs = \"4MiB\", ext4 = "
            "8388608): a bigger image fails the build, naming its biggest contributors"),
)
