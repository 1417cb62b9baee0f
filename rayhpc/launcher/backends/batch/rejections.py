"""What to check when the scheduler refuses a job that rayhpc thought it would take (pure).

Queue tables age, accounts lapse, file system names change: when sbatch or qsub says no,
`rayhpc launch` shows the scheduler's own words and one line naming the site setting to look
at. The patterns are the schedulers' messages as the sites document them (each cited); a
message none of them matches gets the list of all four.
"""

from __future__ import annotations

import re

# (pattern, setting): the first match wins.
PATTERNS: tuple[tuple[str, str], ...] = (
    # ALCF, docs/running-jobs/index.md, "Troubleshooting / Common Errors": "qsub: Job rejected
    # by all possible destinations" means the "walltime or node count do not fall within the
    # ranges" of the production execution queues.
    (r"rejected by all possible destinations", "queue"),
    # ALCF, same page, "qsub": "qsub: Account_Name is required to be set."
    (r"Account_Name is required", "account"),
    # ALCF, same page, "Specifying Filesystems": "qsub: Resource: filesystems is required to be
    # set."
    (r"filesystems? is required|filesystems", "filesystems"),
    # Slurm's own refusals (sbatch: error: Batch job submission failed: ...): "Invalid partition
    # name specified", "Invalid qos specification", "Invalid account or account/partition
    # combination specified", "Requested time limit is invalid (missing or exceeds some
    # limit)". LUMI, batch-job.md, "Specifying the account": a job without --account gets "Job
    # violates accounting/QOS policy".
    (r"[Ii]nvalid partition|[Ii]nvalid qos|[Uu]nknown queue|queue .*(disabled|not exist)",
     "queue"),
    (r"[Ii]nvalid account|accounting/QOS policy|[Aa]ccount", "account"),
    (r"time limit|walltime", "walltime"),
)

SETTINGS = {
    "queue": "the queue: --queue / `queue`, and the site's queue table (`queues`, "
             "`rayhpc sites --site {site}` shows it and the day it was read)",
    "account": "the account: --account / RAYHPC_ACCOUNT / `account` (a project you may "
               "charge on {site})",
    "walltime": "the walltime: --walltime / `walltime`, against the queue's limits "
                "(`rayhpc sites --site {site}`)",
    "filesystems": "the file systems: `scheduler_options: filesystems` and "
                   "`filesystem_mounts` (the shared dir's and the image's)",
}


def rejection_hint(message: str, site: str, site_file: str) -> str:
    """The one line naming what to check in the site's settings for a refusal ``message``."""
    for pattern, setting in PATTERNS:
        if re.search(pattern, message):
            return f"check {SETTINGS[setting].format(site=site)} in {site_file} or the flags"
    every = "; ".join(text.split(":")[0] for text in SETTINGS.values())
    return (f"check the site settings the scheduler judges ({every}) in {site_file} or the "
            f"flags (`rayhpc sites --site {site}` shows the queue table)")
