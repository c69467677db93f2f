#!/bin/sh
# Set up everything lxembed needs on a fresh Debian 12 machine (as root), then run one job:
#   scripts/quickstart.sh demo    build the default image for this host's arch and boot it in qemu
#   scripts/quickstart.sh test    run the full test suite (what CI runs)
#   scripts/quickstart.sh quick   run the quick subset (no image builds, no boots)
#   scripts/quickstart.sh setup   only install (CI jobs from `lxembed matrix` run this first)
set -eu
cd "$(dirname "$0")/.."
job=${1:-demo}

# System packages: qemu (user + system), LXC, crun and libvirt's LXC driver (the libvirt test
# starts libvirtd itself), archive keys, cpio/zstd for tests. busybox-static and procps on the
# host: bind-host containers run the host's busybox and ps. libxml2-utils: virt-xml-validate.
# nftables and dnsmasq-base: `lxembed net` applies its rules with nft and serves DHCP with dnsmasq.
# skopeo, umoci, podman, runc, buildah: the OCI image tests and benchmark read what lxembed writes.
# u-boot-qemu, u-boot-tools, device-tree-compiler, openssl: the fit format and `--boot uboot`.
# swupdate, libubootenv-tool, libubootenv0.1: the update bundle's tests run Debian's swupdate
# (it dlopen()s libubootenv, which it does not depend on) and read the environment back.
# qemu-system-misc: qemu-system-riscv64 (its OpenSBI firmware comes with qemu-system-data).
packages="python3 python3-venv python3-pip qemu-user-static qemu-system-arm qemu-system-mips
  qemu-system-x86 lxc crun iproute2 iputils-ping debian-archive-keyring apt-utils cpio zstd
  xz-utils squashfs-tools e2fsprogs mtd-utils fdisk dosfstools mtools uidmap busybox-static
  procps util-linux nftables dnsmasq-base skopeo umoci podman runc buildah
  libvirt-daemon libvirt-daemon-driver-lxc libvirt-clients libxml2-utils
  u-boot-qemu u-boot-tools device-tree-compiler openssl
  swupdate libubootenv-tool libubootenv0.1 qemu-system-misc"
missing=$(for p in $packages; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
  grep -q "install ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  apt-get install -y -q --no-install-recommends $missing
fi
# The swupdate package enables its own daemon (a web server taking updates for THIS machine):
# lxembed only runs the binary to check bundles, so no such service is left running here.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  systemctl disable --now swupdate.socket swupdate.service swupdate-progress.service \
    >/dev/null 2>&1 || true
fi

# Python packages, from pyproject.toml, in a project venv.
if [ ! -x .venv/bin/lxembed ] || [ pyproject.toml -nt .venv/.installed ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch .venv/.installed
fi
PATH="$PWD/.venv/bin:$PATH"
export PATH

# The demo's board: Debian 13 (trixie) where the architecture has it, bookworm for i386 and MIPS.
case "$(dpkg --print-architecture)" in
  amd64) board=qemu-x86_64-trixie ;; arm64) board=qemu-arm64-trixie ;;
  armhf) board=qemu-armhf-trixie ;;
  i386) board=qemu-i386 ;; mipsel) board=qemu-mipsel ;; mips64el) board=qemu-mips64el ;;
  *) board=qemu-arm64-trixie ;;
esac

case "$job" in
  demo) exec lxembed test --board "$board" --recipe busybox ;;
  test) exec python -m pytest -q ;;
  quick) exec python -m pytest -q -m "not slow" ;;
  setup) exit 0 ;;
  *) echo "usage: $0 demo|test|quick|setup" >&2; exit 2 ;;
esac
