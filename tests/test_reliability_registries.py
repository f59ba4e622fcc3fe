"""Two registries on one PostgreSQL under live nodes: one is SIGKILLed, the network carries on.

Real processes: two ``mycelium bootstrap`` on one PostgreSQL database (``MYCELIUM_TEST_POSTGRES``,
which ``.ci/run`` provides), three ``mycelium join`` nodes given both registry URLs. After the
first registry is killed, the group trains on, a newcomer joins through the second registry, a
member leaves, and the second registry's table holds every change that was acknowledged.
"""

from __future__ import annotations

import time

import pytest

from tests.helpers import wait_for
from tests.registry_backends import fresh_postgres
from tests.reliability_support import (
    Observer,
    Processes,
    registry_groups,
    registry_nodes,
    start_node,
    start_registry,
)

pytestmark = pytest.mark.slow

DEAD_AFTER = 6.0


def test_nodes_carry_on_through_the_other_registry(procs: Processes) -> None:
    with fresh_postgres() as database:
        first, url_a = start_registry(procs, database, dead_after=DEAD_AFTER)  # type: ignore[arg-type]
        _, url_b = start_registry(procs, database, dead_after=DEAD_AFTER)  # type: ignore[arg-type]
        both = f"{url_a},{url_b}"
        children = [start_node(procs, both, i, 4, capacity=4) for i in range(3)]

        def one_group_of(n: int) -> str | None:
            groups = registry_groups(url_b)
            full = [gid for gid, g in groups.items() if len(g["members"]) == n]
            return full[0] if len(groups) == 1 and full else None

        gid = wait_for(lambda: one_group_of(3), 120, interval=0.5, what="one group of three")
        observer = Observer([n["gossip_address"] for n in registry_nodes(url_b).values()])
        try:
            wait_for(lambda: (r := observer.groups().get(gid)) and r.round >= 2, 60, what="rounds")
            first.kill()  # the registry most nodes were talking to: no goodbye
            killed = time.monotonic()
            at_kill = observer.groups()[gid].round
            wait_for(lambda: observer.groups()[gid].round >= at_kill + 3, 60, what="training on")
            # A newcomer joins the group through the surviving registry...
            start_node(procs, both, 3, 4, capacity=4)
            gid4 = wait_for(lambda: one_group_of(4), 90, interval=0.5, what="the newcomer in")
            joined = time.monotonic() - killed
            assert gid4 == gid
            # ...and a member leaves: the survivor records that too.
            leaver = children[0]
            leaver.terminate()
            wait_for(lambda: one_group_of(3), 60, interval=0.5, what="the leaver out")
            # Nothing acknowledged is lost: the survivor's table agrees with the nodes' gossip.
            nodes = registry_nodes(url_b)

            def agreed() -> bool:
                record = observer.groups().get(gid)
                group = registry_groups(url_b).get(gid)
                return bool(record and group and sorted(record.members) == sorted(group["members"]))

            wait_for(agreed, 30, what="registry and gossip agreeing")
            alive = sorted(n["name"] for n in nodes.values() if n["status"] == "alive")
            print(
                f"registry A killed at round {at_kill}; the group trained on, a newcomer joined "
                f"{joined:.1f} s after the kill; alive at the survivor: {alive}"
            )
        finally:
            observer.close()
