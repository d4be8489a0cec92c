"""Distributed pieces: process-group lookup by name, the Lamport workspace
registry, expert maps and the EP combine."""
from .combine import ep_combine  # noqa: F401
from .expert_map import expert_map, local_expert_range  # noqa: F401
from .groups import (agree_on_call, collective_checks_on, end_spawned_worker, group_world_size, lamport_workspace, local_init_method,  # noqa: F401
                     register_lamport_workspace, resolve_group, unregister_lamport_workspace)
from .lamport import LamportWorkspace  # noqa: F401
