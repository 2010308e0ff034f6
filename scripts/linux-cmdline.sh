#!/bin/bash
# Print the kernel command line for booting the Debian cloud kernel on a kvm_pvm host:
# scripts/linux-cmdline.txt plus tsc_early_khz for THIS host. docs/linux-guest.md explains
# each item; tsc_early_khz is 4 x the host TSC frequency, so the guest's periodic tick
# fires 4 x less often in real time (the tick dominated emulated-CPL0 boot time).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
line=$(sed -e 's/[[:space:]]*tsc_early_khz=[0-9]*//' "$REPO/scripts/linux-cmdline.txt")
khz=
if [ -r /sys/devices/system/cpu/cpu0/tsc_freq_khz ]; then
    khz=$(cat /sys/devices/system/cpu/cpu0/tsc_freq_khz)
fi
if [ -z "$khz" ]; then
    # "cpu MHz : 2445.406" -> 2445406 kHz (the TSC runs at the nominal frequency on
    # hosts with a constant TSC, which KVM requires for a stable guest clock)
    khz=$(awk -F: '/^cpu MHz/ { gsub(/ /, "", $2); printf "%d\n", $2 * 1000; exit }' /proc/cpuinfo)
fi
if [ -n "$khz" ] && [ "$khz" -gt 0 ]; then
    line="$line tsc_early_khz=$((4 * khz))"
fi
echo "$line"
