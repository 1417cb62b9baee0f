#!/bin/sh
# Start munge, then slurmctld (controller) or slurmd (compute node), in the foreground.
set -e
mkdir -p /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
chown munge:munge /run/munge
chown slurm:slurm /var/spool/slurmctld /var/log/slurm
runuser -u munge -- munged
# Users' Apptainer mounts SIFs with squashfuse: the device must be theirs to open.
[ -e /dev/fuse ] && chmod 666 /dev/fuse
if [ "$1" = controller ]; then
  exec slurmctld -D -i
fi
exec slurmd -D -N "$(hostname)"
