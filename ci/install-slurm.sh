#!/usr/bin/env bash
# Install a single-node Slurm (Debian's slurm-wlm: slurmctld, slurmd, sbatch, ...) and munge and
# munge, for tests/test_slurm.py. Idempotent; needs root (or sudo) and apt. Does not start
# or configure any daemon: the test writes its own slurm.conf and munge key in a temporary
# folder and starts (and stops) the daemons itself.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
   && command -v sbatch >/dev/null && command -v munged >/dev/null; then
  echo "slurm and munge already installed: $(slurmctld -V), $(munged --version)"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d 101: do not let the packages' postinst start the system services
# (the test runs its own daemons; in containers there is no init to start them with)
had_policy=0
[ -e /usr/sbin/policy-rc.d ] && had_policy=1
if [ "$had_policy" -eq 0 ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
fi
$SUDO apt-get install -y -qq --no-install-recommends slurm-wlm munge
[ "$had_policy" -eq 1 ] || $SUDO rm -f /usr/sbin/policy-rc.d
slurmctld -V
munged --version
