"""The Flower glue, split by job; the only part of Mycelium that imports ``flwr``.

- ``setup``: the process-wide settings, installed explicitly (`install`), never on import;
- ``strategies``: the table of aggregation strategies and the checks around them;
- ``server``: `GroupServer`, a group's continuous rounds on a thread, stoppable, on port 0;
- ``client``: `MemberClient`, a member that connects, switches and leaves in-process;
- ``adapter``: a stock ``NumPyClient`` as a task (`ClientTask`), and a task as a client;
- ``channels`` and ``calls``: gRPC addresses and channels, and each member's recorded stream;
- ``plain``: plain Flower, for the benchmark.

Keeping every ``flwr`` import in this package means a move to another Flower API is one package.
"""

from mycelium_p2p.learning.flower.channels import check_address, wait_for_server
from mycelium_p2p.learning.flower.client import MemberClient
from mycelium_p2p.learning.flower.plain import plain_client_rounds, plain_flower_rounds
from mycelium_p2p.learning.flower.server import GroupServer, RoundResult
from mycelium_p2p.learning.flower.setup import install
from mycelium_p2p.learning.flower.strategies import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    make_strategy,
    robust_minimum,
)

__all__ = [
    "DEFAULT_STRATEGY",
    "STRATEGIES",
    "GroupServer",
    "MemberClient",
    "RoundResult",
    "check_address",
    "install",
    "make_strategy",
    "plain_client_rounds",
    "plain_flower_rounds",
    "robust_minimum",
    "wait_for_server",
]
