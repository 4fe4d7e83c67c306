# shellcheck shell=bash
# Shared by image/build, image/qemu and image/smoke: the per-architecture facts and small helpers.
# Sourced, not run; the variables it sets are used by those scripts.
# shellcheck disable=SC2034

# The Debian release of both the build chroot and the appliance's root file system. One release for
# both architectures keeps the binary and the libraries it links against (glibc) from the same place.
DEBIAN_SUITE=trixie

# Sets ARCH-dependent variables for ARCH (x86_64 or aarch64); returns 1 for anything else.
arch_facts() {
    case "$1" in
    x86_64)
        DEB_ARCH=amd64
        RUST_TARGET=x86_64-unknown-linux-gnu
        # jemalloc's page size, log2: x86-64 kernels use 4 KiB pages.
        JEMALLOC_LG_PAGE=12
        KERNEL_PACKAGE=linux-image-amd64
        EFI_ARCH=x64
        EFI_REMOVABLE=BOOTX64.EFI
        SERIAL_TTY=ttyS0
        # GPT type "Linux root (x86-64)" from the Discoverable Partitions Specification.
        ROOT_PART_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709
        ;;
    aarch64)
        DEB_ARCH=arm64
        RUST_TARGET=aarch64-unknown-linux-gnu
        # ARM kernels run with 4, 16 or 64 KiB pages, and jemalloc built for smaller pages than the
        # kernel's fails at start: 64 KiB works on all three (cross-building cannot ask the board).
        JEMALLOC_LG_PAGE=16
        KERNEL_PACKAGE=linux-image-arm64
        EFI_ARCH=aa64
        EFI_REMOVABLE=BOOTAA64.EFI
        SERIAL_TTY=ttyAMA0
        # GPT type "Linux root (64-bit ARM/AArch64)".
        ROOT_PART_TYPE=B921B045-1DF0-41C3-AF44-4C6F280D3FAE
        ;;
    *)
        return 1
        ;;
    esac
}

# Prints an error and exits.
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Prints a duration in seconds as 1m05s / 42s.
human_seconds() {
    local s=$1
    if [ "$s" -ge 60 ]; then
        printf '%dm%02ds' $((s / 60)) $((s % 60))
    else
        printf '%ds' "$s"
    fi
}

# Prints the UEFI firmware files QEMU needs for ARCH as "CODE VARS" (Debian packages ovmf and
# qemu-efi-aarch64); the VARS file is a template that every run copies, since QEMU writes to it.
uefi_firmware() {
    local code vars
    case "$1" in
    x86_64)
        code=/usr/share/OVMF/OVMF_CODE_4M.fd
        vars=/usr/share/OVMF/OVMF_VARS_4M.fd
        ;;
    aarch64)
        code=/usr/share/AAVMF/AAVMF_CODE.fd
        vars=/usr/share/AAVMF/AAVMF_VARS.fd
        ;;
    esac
    [ -r "$code" ] && [ -r "$vars" ] || return 1
    printf '%s %s\n' "$code" "$vars"
}
