"""pluggy markers for the ``innersight`` project.

Plugins decorate their hook implementations with :data:`hookimpl`::

    from innersight.core import hookimpl

    @hookimpl
    def innersight_register_techniques():
        yield MyTechnique()
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "innersight"
ENTRY_POINT_GROUP = "innersight"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["ENTRY_POINT_GROUP", "PROJECT_NAME", "hookimpl", "hookspec"]
