"""The contract between the launcher and the node program: what one writes and the other reads.
Both sides import this package and nothing of each other (it is delivered inside
node_agent.pyz). Standard library only: it runs in any stock rayproject/ray image.

  run_paths      every file of the run directory and its one writer (`RunPaths`)
  records        the JSON records more than one room reads, typed: head.json, status.json,
                 timing.json, nodes.json, blocks/B.json
  launch_spec    spec.json (`LaunchSpec`, `NodeGroup`)
  attempts       a run's attempts (`--restarts`): whether it goes on, attempts/<n>/
  launched_run   a launched run as its directory tells it (what backends are handed)
  environment    the variables the job script hands the node; Ray node labels; socket limits
  untrusted_files  every file of the run directory opened with no link followed, read to a
                 bound (the containers write the run directory: untrusted input)
  atomic_io, json_types, driver_overflow: writing whole files, strict reading, driver.log's
                 overflow marker
"""

from rayhpc.launcher.contract.atomic_io import (
    RECORD_MAX_BYTES,
    atomic_file,
    atomic_write,
    json_text,
    parse_json,
    read_json,
    run_dir_problem,
    write_json,
)
from rayhpc.launcher.contract.attempts import (
    ATTEMPT_ENV,
    CHECKPOINT_ENV,
    RESUME_ENV,
    EndedAttempt,
    allocation_ended,
    attempt_numbers,
    attempt_started,
    begin_attempt,
    current_attempt,
    end_attempt,
    ended_attempts,
    restart_reason,
)
from rayhpc.launcher.contract.driver_overflow import (
    OVERFLOW_END,
    OVERFLOW_PREFIX,
    overflow_marker,
    parse_overflow_marker,
)
from rayhpc.launcher.contract.endpoint_probe import health_path, http_status
from rayhpc.launcher.contract.environment import (
    AF_UNIX_MAX,
    FABRIC_VARS,
    HEAD_HOST_ENV,
    NODE_IP_ENV,
    NODE_TEMP_DIR_ENV,
    NODES_ENV,
    RANK_VARS_ENV,
    RAY_GROUP_LABEL,
    RAY_IMAGE_LABEL,
    RAY_NODE_LABEL,
    RAY_SOCKET_SUFFIX,
    RUN_DIR_ENV,
    fabric_environment,
    label_value,
    temp_dir_fits,
)
from rayhpc.launcher.contract.json_types import RecordError, check_json_types, fits_json_type
from rayhpc.launcher.contract.launch_spec import (
    DASHBOARD_LOCAL_PORT,
    SERVE_DEFAULT_PORT,
    LaunchSpec,
    NodeGroup,
    read_spec,
    spec_from_text,
)
from rayhpc.launcher.contract.launched_run import LaunchedRun, record_end_for_the_head
from rayhpc.launcher.contract.records import (
    Block,
    BlockCounts,
    GroupTotals,
    HeadRecord,
    NodeRecord,
    Record,
    StatusRecord,
    TimingRecord,
    node_records,
    read_blocks,
    read_node_records,
    read_record,
    write_record,
)
from rayhpc.launcher.contract.run_paths import (
    DRAIN_MAX_S,
    FINAL_STATES,
    FIRST_GROWN_BLOCK,
    LEFT,
    NODE_PROGRAM,
    RunPaths,
    block_name,
    block_node_name,
    drain_window,
)
from rayhpc.launcher.contract.untrusted_files import (
    TEXT_MAX_BYTES,
    UnsafeFile,
    create_exclusive,
    list_names,
    open_for_reading,
    read_bounded,
    read_text_quietly,
    remove,
)

__all__ = [
    "ATTEMPT_ENV", "CHECKPOINT_ENV", "RESUME_ENV", "allocation_ended", "attempt_numbers",
    "attempt_started", "begin_attempt", "current_attempt", "restart_reason", "EndedAttempt",
    "end_attempt", "ended_attempts",
    "AF_UNIX_MAX", "Block", "BlockCounts", "DASHBOARD_LOCAL_PORT", "DRAIN_MAX_S", "FABRIC_VARS",
    "SERVE_DEFAULT_PORT", "health_path", "http_status",
    "FINAL_STATES", "FIRST_GROWN_BLOCK", "GroupTotals", "HEAD_HOST_ENV", "HeadRecord", "LEFT",
    "LaunchSpec", "LaunchedRun", "NODES_ENV", "NODE_IP_ENV", "NODE_PROGRAM", "NODE_TEMP_DIR_ENV",
    "NodeGroup", "NodeRecord", "OVERFLOW_END", "OVERFLOW_PREFIX", "RANK_VARS_ENV",
    "RAY_GROUP_LABEL", "RAY_IMAGE_LABEL", "RAY_NODE_LABEL", "RAY_SOCKET_SUFFIX",
    "RECORD_MAX_BYTES", "RUN_DIR_ENV", "Record", "RecordError", "RunPaths", "StatusRecord",
    "TEXT_MAX_BYTES", "TimingRecord", "UnsafeFile", "atomic_file", "atomic_write", "block_name",
    "block_node_name", "check_json_types", "create_exclusive", "drain_window",
    "fabric_environment", "fits_json_type", "json_text", "label_value", "list_names",
    "node_records", "open_for_reading", "overflow_marker", "parse_json", "parse_overflow_marker",
    "read_blocks", "read_bounded", "read_json", "read_node_records", "read_record", "read_spec",
    "read_text_quietly", "record_end_for_the_head", "remove", "run_dir_problem", "spec_from_text",
    "temp_dir_fits", "write_json", "write_record"]
