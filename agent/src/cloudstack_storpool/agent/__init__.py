"""KVM host side: attach StorPool devices, copy with qemu-img, resize through libvirt, safe VM start."""
