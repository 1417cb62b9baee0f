#!/bin/sh
# Start munge, then slurmctld (controller) or slurmd (compute node), in the foreground.
set -e
mkdir -p /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown munge:munge /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
runuser -u munge -- munged
# An emulated GPU node's device files, as its site's documentation lists them (harness.py:
# "path:major:minor ..."); Slurm's gres.conf names them, Ray's vendor libraries count them.
for device in ${TESTBED_DEVICES:-}; do
  path="${device%%:*}"; numbers="${device#*:}"
  mkdir -p "$(dirname "$path")"
  mknod -m 666 "$path" c "${numbers%%:*}" "${numbers#*:}"
done
# The NVML stand-in, where harness.py bound it: in the ld.so cache, as the real one is.
[ -e /usr/local/lib/libnvidia-ml.so.1 ] && ldconfig
# Users' Apptainer mounts SIFs with squashfuse: the device must be theirs to open.
[ -e /dev/fuse ] && chmod 666 /dev/fuse
if [ "$1" = controller ]; then
  exec slurmctld -D -i
fi
exec slurmd -D -N "$(hostname)"
