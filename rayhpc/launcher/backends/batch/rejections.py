"""What to check when the scheduler refuses a job that rayhpc thought it would take (pure).

Queue tables age, accounts lapse, file system names change: when sbatch or qsub says no,
`rayhpc launch` shows the scheduler's own words and one line naming the site setting to look
at. The patterns are each scheduler's (its `rejections`: its messages as the sites document
them, each cited); a message none of them matches gets the list of all four settings.
"""

from __future__ import annotations

import re

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


def rejection_hint(message: str, site: str, site_file: str,
                   patterns: tuple[tuple[str, str], ...]) -> str:
    """The one line naming what to check in the site's settings for a refusal ``message``
    (``patterns``: the scheduler's `rejections`)."""
    for pattern, setting in patterns:
        if re.search(pattern, message):
            return f"check {SETTINGS[setting].format(site=site)} in {site_file} or the flags"
    every = "; ".join(text.split(":")[0] for text in SETTINGS.values())
    return (f"check the site settings the scheduler judges ({every}) in {site_file} or the "
            f"flags (`rayhpc sites --site {site}` shows the queue table)")
