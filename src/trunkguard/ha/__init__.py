"""High availability: an active/standby pair (or N active nodes) sharing state on etcd.

The pure parts are here (the role machine, the settings, the shared record);
the node that runs them on the event loop is ``trunkguard.ha._node.HaNode``.
"""

from ._role import Action, Leader, Role, RoleName
from ._settings import ACTIVE_ACTIVE, ACTIVE_STANDBY, HaSettings

__all__ = ["ACTIVE_ACTIVE", "ACTIVE_STANDBY", "Action", "HaSettings", "Leader", "Role", "RoleName"]
