"""A Ray Serve application to serve from a rayhpc cluster (docs/serving.md):

    rayhpc launch --interactive --serve examples.serve_echo:app

Two replicas, one per node; each answers `GET /?text=...` with the
text and the node it ran on. CPU only: runs on the stock image (Ray Serve is in it).
"""

import socket

from ray import serve
from starlette.requests import Request


# One replica per node (Ray Serve's proxy, on the head, prefers the replica beside it).
@serve.deployment(num_replicas=2, max_replicas_per_node=1, ray_actor_options={"num_cpus": 0.5})
class Echo:
    async def __call__(self, request: Request) -> dict:
        return {"echo": request.query_params.get("text", ""), "node": socket.gethostname()}


app = Echo.bind()
