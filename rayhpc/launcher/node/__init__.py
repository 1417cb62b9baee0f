"""The node program: runs in every container of a launch and does the node's work.

Standard library and Ray only, so any stock rayproject/ray image runs it as delivered: the
launcher bundles this package and `launcher.contract` into one file in the run directory,
node_agent.pyz (`launcher.backends.bundle`), which Python runs directly. No MPI is needed.

  head (rank 0):   `head.Head`: listen for the workers' agents, start Ray's head, publish
                   head.json, wait for every node, run the driver (or keep an interactive
                   cluster up until a stop), stop every node, write exit_code and timing.json.
  worker (rank>0): `worker.Worker`: reach the head's agent over TCP, join Ray, follow the head;
                   stop when the head says so, on a signal, or when the connection closes.

The control plane is the network, not the shared file system (at 1024 nodes, every file a node
polls is a metadata server's load): `channel` carries the workers' states, the head's address
and "stop". On the shared run directory each node reads the program, spec.json and the token
once, writes one log archive and one record at its end; only the head watches the `stop` file
(once a second). `launcher.contract.RunPaths` names every file.

Modules: `main` (entry, role), `agent` (what both roles share), `head`, `worker`, `channel`
(the control plane), `ray_start` (Ray's arguments and version gates), `processes` (the Ray CLI,
stopping a session), `harvest` (log archives), `report` (resources, missing and lost nodes),
`connect` (connect.txt), `membership` and `block_keeper` (who is in the cluster, grown blocks),
`head_route`, `gpu_env`, `preflight`, `driver_output`, `launch_failed`, `bundle_main` (the single
file's start-up).
"""
