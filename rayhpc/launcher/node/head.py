"""The head's agent (rank 0): listen for the workers' agents, start Ray's head, publish
head.json, wait for every node, run the driver (or, with no driver, write connect.txt and keep
the cluster up until a stop), stop every node, write exit_code and timing.json."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time

from rayhpc.launcher.contract import (
    ATTEMPT_ENV,
    CHECKPOINT_ENV,
    NODES_ENV,
    RESUME_ENV,
    RUN_DIR_ENV,
    HeadRecord,
    LaunchSpec,
    NodeRecord,
    RunPaths,
    StatusRecord,
    TimingRecord,
    atomic_write,
    attempt_started,
    current_attempt,
    end_attempt,
    run_dir_problem,
    write_record,
)
from rayhpc.launcher.node.agent import Agent
from rayhpc.launcher.node.block_keeper import BlockKeeper, RayDrain, block_counts
from rayhpc.launcher.node.channel import ControlServer, secret_of
from rayhpc.launcher.node.connect import connect_text
from rayhpc.launcher.node.driver_output import DriverOutput
from rayhpc.launcher.node.endpoint import follow_driver_service, serve_application
from rayhpc.launcher.node.head_route import head_route_environment
from rayhpc.launcher.node.launch_failed import LaunchFailed
from rayhpc.launcher.node.membership import watch_nodes
from rayhpc.launcher.node.processes import POLL_S, stop_session, terminate_group
from rayhpc.launcher.node.ray_start import agent_addresses, node_ip, without_proxy
from rayhpc.launcher.node.report import (
    failed_before_joining,
    final_of,
    first_few,
    missing_nodes,
    nodes_poll_s,
    report_resources,
    status_every_s,
)
from rayhpc.launcher.node.stop_requests import STOP_FILE_EVERY_S, StopRequests
from rayhpc.launcher.timeline import write_timeline

DRIVER_KILL_AFTER_S = 10  # SIGKILL a driver still there this long after SIGTERM
LEFTOVER_GRACE_S = 3  # what the driver left running gets this long after SIGTERM
# Ray's published scalability envelope ("Ray Scalability Envelope", release/benchmarks/
# README.md in ray-project/ray: "# nodes in cluster (with trivial task workload) | 3k+"); the
# head says so above it.
RAY_TESTED_NODES = 3000


def driver_command(template: str, address: str) -> str:
    return template.replace("{address}", address)


def driver_argv(command: str) -> list[str]:
    """What the driver runs as (Popen's shell=True, spelled out: its leftovers' names are
    told from this command line)."""
    return ["/bin/sh", "-c", command]


class Head(Agent):
    keeps_worker_logs = True  # the driver's and the head's processes: always worth keeping

    def __init__(self, paths: RunPaths, node: str, spec: LaunchSpec, group: str = ""):
        super().__init__(paths, node, spec, group)
        self.driver: subprocess.Popen | None = None
        # Which start of the run (`--restarts`: claimed in attempts/ before any node started).
        self.attempt = current_attempt(paths) if spec.restarts else 1
        started = attempt_started(paths, self.attempt)[0] if self.attempt > 1 else 0.0
        self.timing = TimingRecord(t_submit=started or spec.t_submit, t_head_start=time.time(),
                                   nodes_expected=spec.nodes)
        self.status = StatusRecord(expected=spec.nodes)
        self._status_lock = threading.Lock()
        self._status_written = 0.0
        self.stops = StopRequests(paths, spec.walltime_s, spec.stop_grace)
        self.driver_ended_first = False  # the driver exited before any signal came
        self.driver_finished = False  # ... and before any stop was asked: its own end
        self.server = ControlServer(spec.ports["agent"], secret_of(self.token),
                                    tuple(agent_addresses(spec.interface, spec.nodes > 1)))
        self.ray_nodes: list[dict] = []  # Ray's node list when every node had joined
        self.resources: dict[str, dict] = {}  # node -> what it brought to Ray
        self.blocks = BlockKeeper(self)  # grown blocks: released on request (`shrink`)

    def on_stop_request(self) -> None:
        """SIGTERM to the driver's process group; SIGKILL if it is still there 10 s later (a
        driver that ignores SIGTERM must not eat the walltime grace)."""
        if self.driver is not None and self.driver.poll() is None:
            terminate_group(self.driver.pid, DRIVER_KILL_AFTER_S)

    def stop_requested(self) -> bool:
        """A signal, or a stop asked in the run directory (see `node.stop_requests`)."""
        return self.signalled is not None or self.stops.requested(self.say)

    def run(self) -> int:
        code, error, bad_input = 1, "", False
        try:
            if self.attempt > 1:
                self.note(f"attempt {self.attempt} of {self.spec.restarts + 1}: the run starts "
                          "again (the driver gets RAYHPC_RESUME=1)")
            if self.spec.nodes > RAY_TESTED_NODES:
                self.note(f"{self.spec.nodes} nodes is beyond what Ray's own scalability "
                          f"envelope covers ({RAY_TESTED_NODES}): expect a slow bring-up; "
                          "consider head_cpus: 0")
            address = self.start_head()
            if self.wait_for_nodes(address) and not self.stop_requested():
                report_resources(self)
                # No driver: an interactive cluster, up until a stop (see serve).
                interactive = self.spec.driver is None
                code = self.serve() if interactive else self.run_driver(address)
            else:
                code = 128 + (self.signalled or signal.SIGTERM)
                error = "stopped before the driver ran (walltime warning, cancel or Ctrl-C)"
        except LaunchFailed as exc:
            code, error, bad_input = exc.exit_code, str(exc), exc.bad_input
            self.say(f"error: {error}")
        except OSError as exc:  # the shared run directory failing mid-run
            error = run_dir_problem(exc)
            self.say(f"error: {error}")
        self.failed = bool(error)
        self.teardown()
        if self.signalled and not self.driver_ended_first:
            code = 128 + self.signalled
        try:
            # Bad input fails the same way in every attempt: it ends the run.
            ended = "" if bad_input else self.decide_restart(code)
            error = error or ended
            if error:
                atomic_write(self.paths.error, error + "\n")
            write_record(self.paths.timing, self.timing)
            try:
                write_timeline(self.paths)
            except Exception as exc:  # noqa: BLE001 (a picture is never worth the exit code)
                self.say(f"timeline.svg not written: {type(exc).__name__}: {exc}")
            atomic_write(self.paths.exit_code, f"{code}\n")
        except OSError as exc:
            self.say(f"error: {run_dir_problem(exc)}: exit code not recorded")
        # The launcher reads this line from the head's output when exit_code cannot be written.
        self.say(f"done: exit code {code}")
        return code

    def decide_restart(self, code: int) -> str:
        """Whether the run starts again (`contract.attempts.end_attempt`); the error that ends
        it where its last attempt ended at its allocation's end. A signal to the agent itself
        (Ctrl-C, a plain cancel) never restarts it."""
        if self.signalled or not self.spec.restarts:
            return ""
        said, error = end_attempt(self.paths, self.spec, self.attempt, code,
                                  self.driver_finished)
        if said:
            self.say(said)
        return error

    def start_head(self) -> str:
        self.ip = node_ip(self.spec.interface, self.spec.nodes > 1)
        self.say(f"starting Ray head on {self.ip}")
        # The driver (and Ray's head) reach the head's address without the site's proxy.
        self.env = without_proxy(self.env, self.ip)
        # NCCL and Gloo on the interface that reaches the head (its own address), unless set.
        self.env.update(head_route_environment(self.env, self.ip))
        versions = self.preflight(None)
        self.ray(*self.start_args(None))
        address = f"{self.ip}:{self.spec.ports['gcs']}"
        # The GCS is up once `ray start` returns: workers may join while we connect.
        self.timing.t_head_up = time.time()
        head = HeadRecord(address=address, ip=self.ip, node=self.node,
                          gcs_port=self.spec.ports["gcs"], agent_port=self.spec.ports["agent"],
                          dashboard_port=self.spec.ports["dashboard"],
                          client_port=self.spec.ports["client"], time=self.timing.t_head_up,
                          versions=versions)  # the workers' preflight compares theirs
        self.server.announce(head=head.to_json())
        write_record(self.paths.head, head)
        self.connect(address)
        self.blocks.drain = RayDrain(address)
        self.say(f"head up at {address}")
        return address

    def connect(self, address: str) -> None:
        """Connect as a client: the head is up only when a driver can really connect."""
        import logging

        import ray

        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 namespace="rayhpc-agent")
        # Ray's core worker installs a crash handler that dies on SIGTERM: the agent's own
        # handlers must win, or a stop from outside would skip the teardown.
        self.handle_signals()

    def alive_nodes(self) -> list[dict]:
        import ray

        return [n for n in ray.nodes() if n.get("Alive")]

    def publish_status(self, force: bool = False, **changes: object) -> bool:
        """status.json (every node's state and address, for `rayhpc status` and `logs`), built
        and written at most every status_every_s unless ``force``. True: written."""
        with self._status_lock:  # the watch loop and a block's release both publish
            for name, value in changes.items():
                setattr(self.status, name, value)
            now = time.monotonic()
            if not force and now - self._status_written < status_every_s(self.spec.nodes):
                return False
            self._status_written = now
            self._write_status()
            return True

    def _write_status(self) -> None:
        records = self.server.records()
        nodes = {self.node: NodeRecord(state="joined", ip=self.ip,
                                       group=self.group.name if self.group else None),
                 **{name: NodeRecord(state=r["state"], ip=r["ip"], group=r["group"] or None,
                                     block=r["block"] or None)
                    for name, r in records.items()}}
        for name, node in nodes.items():
            node.resources = self.resources.get(name)
        self.status.blocks = self.timing.blocks = block_counts(records)
        self.status.nodes = nodes
        write_record(self.paths.status, self.status)

    def note(self, message: str) -> None:
        """Say something the user should see on the launcher's console too (status.json)."""
        self.say(message)
        with contextlib.suppress(OSError):
            self.publish_status(force=True, notes=[*self.status.notes, message])

    def wait_for_nodes(self, address: str) -> bool:
        """Until every node has joined: the workers say so over the control connection; Ray's
        own node list confirms it (asked rarely while they come, and at the end). A worker
        whose agent says it failed (its preflight, `ray start`) fails the launch at once, by
        its name and in its words."""
        expected = self.spec.nodes
        deadline = time.time() + self.spec.join_timeout
        self.status.address = address
        version, shown, next_gcs, alive = -1, -1, 0.0, 1
        while not self.stop_requested():
            joined = 1 + self.server.count("joined")  # what the workers' agents said
            if time.monotonic() >= next_gcs or joined >= expected:
                self.ray_nodes = self.alive_nodes()
                alive = len(self.ray_nodes)  # what Ray says
                next_gcs = time.monotonic() + (0.1 if joined >= expected
                                               else nodes_poll_s(expected))
            # All joined only once Ray confirms it; progress from whichever knows more.
            progress = max(joined, alive) if alive >= expected else min(max(joined, alive),
                                                                        expected - 1)
            self.timing.nodes_joined = progress
            # Shown at most every status_every_s (this runs each second and on every message,
            # thousands a second while a large cluster joins), the last count always.
            if progress != shown and self.publish_status(force=progress >= expected,
                                                          joined=progress):
                shown = progress
                self.say(f"{progress}/{expected} nodes joined")
            if alive >= expected:
                self.timing.t_all_joined = time.time()
                return True
            failure = self.server.first_failure()
            if failure is not None:  # it will never join: no use waiting for the timeout
                raise LaunchFailed(failed_before_joining(*failure))
            if time.time() > deadline:
                missing = missing_nodes(self.spec.node_names[1:], expected - 1,
                                        self.server.records())
                raise LaunchFailed(
                    f"timed out after {self.spec.join_timeout} s waiting for "
                    f"{expected} nodes ({alive} joined); never joined: "
                    f"{first_few(missing, f'states in {self.paths.status.name}') or 'unknown'}")
            version = self.server.wait(version, timeout=min(STOP_FILE_EVERY_S,
                                                            max(0.0, next_gcs
                                                                - time.monotonic())))
        return False

    def driver_env(self, address: str) -> dict[str, str]:
        """The driver's environment (and a Serve application's deployment's)."""
        return dict(self.env, RAY_ADDRESS=address, PYTHONUNBUFFERED="1",
                    **{RUN_DIR_ENV: str(self.paths.dir), NODES_ENV: str(self.spec.nodes),
                       ATTEMPT_ENV: str(self.attempt),
                       CHECKPOINT_ENV: str(self.spec.checkpoints)},
                    **({RESUME_ENV: "1"} if self.attempt > 1 else {}))

    def run_driver(self, address: str) -> int:
        command = driver_command(self.spec.driver, address)
        env = self.driver_env(address)
        self.say(f"running driver: {command}")
        self.timing.t_driver_start = time.time()
        output = DriverOutput(self.paths.driver_log, self.say)
        self.driver = subprocess.Popen(driver_argv(command), cwd=self.spec.shared, env=env,
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        copier = threading.Thread(target=output.copy, args=(self.driver.stdout,), daemon=True)
        copier.start()
        if self.spec.serve_port:  # the driver's own HTTP service (vLLM's server, ...)
            follow_driver_service(self)
        node_watch = threading.Thread(target=self.watch_nodes, daemon=True)
        node_watch.start()
        # The driver's end is its own exit, not the end of its output: a background
        # process it left behind may hold the pipe open for ever.
        asked = False
        while (code := self.driver.poll()) is None:
            if not asked and self.signalled is None and self.stop_requested():
                asked = True  # the stop file (a signal has stopped the driver already)
                self.say("stop requested: stopping the driver")
                self.on_stop_request()
            time.sleep(POLL_S)
        self.timing.t_driver_end = time.time()
        # Its own end, before any signal: its code stands (a SIGHUP during the teardown, a
        # closed terminal, does not make a driver that exited 0 a failure).
        self.driver_ended_first = self.signalled is None
        self.driver_finished = self.driver_ended_first and not asked
        self.server.poke()  # the node watch sees the driver's end now, not at its next period
        left, names = stop_session(self.driver.pid, LEFTOVER_GRACE_S,
                                   leader=driver_argv(command))
        if left:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            self.note(f"the driver left {left} process(es) running ({shown}): stopped them")
        copier.join(timeout=LEFTOVER_GRACE_S)
        output.close()
        node_watch.join(timeout=5)  # before teardown drops the connection it lists nodes with
        code = 128 - code if code < 0 else code  # killed by signal N -> 128+N, as shells do
        self.say(f"driver exited with {code}")
        return code

    def serve(self) -> int:
        """Interactive (no driver): say how to connect (connect.txt), then keep the cluster up
        until a stop comes (`rayhpc down`, the walltime warning, a cancel, Ctrl-C). Ray jobs
        come and go meanwhile; the exit code is that of the stop (143, or 128 + the signal)."""
        self.timing.t_driver_start = time.time()
        endpoint = serve_application(self) if self.spec.serve else []
        if endpoint is not None:  # (None: stopped while the application deployed)
            atomic_write(self.paths.connect, connect_text(self.spec, self.ip,
                                                          str(self.paths.auth_token), endpoint))
            self.say(f"cluster up, interactive: {self.paths.connect}")
            self.watch_nodes(running=lambda: not self.stop_requested())
        self.timing.t_driver_end = time.time()
        who = signal.Signals(self.signalled).name if self.signalled else self.stops.who()
        self.note(f"stopping the cluster ({who})")
        return 128 + (self.signalled or signal.SIGTERM)

    def watch_nodes(self, running=None) -> None:
        """While the driver runs (or ``running()`` is true): see `node.membership`."""
        watch_nodes(self, running or (lambda: self.driver is not None
                                      and self.driver.poll() is None))

    def teardown(self) -> None:
        """Tell every worker to stop (over the network; the stop file too, for any that never
        reached us), stop our Ray, keep the logs, wait for the workers to say they stopped."""
        # Announced, not only sent: a worker that gets through only now (still probing while
        # the launch failed) hears "stop" instead of the head's address.
        self.server.announce(stop="the head is tearing down")
        self.timing.t_teardown_start = time.time()
        try:
            self.paths.request_stop(f"head: {self.node} is tearing down")
        except OSError as exc:
            self.say(f"cannot write the stop file: {run_dir_problem(exc)}")
        ray = sys.modules.get("ray")
        if ray is not None:
            ray.shutdown()  # the agent's own connection, made in start_head
        self.stop_ray()
        summary = self.harvest_logs()
        deadline = time.monotonic() + self.spec.stop_timeout
        version = -1
        while time.monotonic() < deadline and not self.server.settled():
            version = self.server.wait(version, timeout=max(0.0, deadline - time.monotonic()))
        self.server.close()
        # Every node's final record in one file: one write for the whole cluster.
        times = {"starting": self.timing.t_head_start, "joined": self.timing.t_head_up}
        records = {self.node: self.final_record("failed" if self.failed else "stopped",
                                                logs=summary, times=times, role="head")}
        for name, peer in self.server.records().items():  # times: when the head heard
            records[name] = final_of(name, peer)
        try:
            write_record(self.paths.nodes_file, records)
        except OSError as exc:
            self.say(f"node records not written: {run_dir_problem(exc)}")
        self.timing.blocks = block_counts(self.server.records())
        self.timing.t_teardown_done = time.time()
