"""``innersight list``: the techniques, backends and plugins this installation has."""

from __future__ import annotations

import argparse
from typing import Any

import innersight as ins
from innersight.cli.common import print_table
from innersight.core.manager import PluginInfo

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "list",
        help="techniques, backends and plugins",
        description="List the techniques and backends, the plugins that provide them, and "
        "plugins that failed to load.",
    )
    return parser


def _dist(info: PluginInfo) -> str:
    return f"{info.distribution} {info.version}".strip()


def run(args: argparse.Namespace) -> int:
    pm = ins.get_plugin_manager()
    techniques = ins.techniques()
    rows = []
    for name in sorted(techniques):
        info = pm.provider(name)
        rows.append((name, techniques[name].summary, info.name, _dist(info)))
    print(f"Techniques ({len(rows)}):")
    print_table(rows, ("name", "summary", "plugin", "distribution"))

    impls = pm.pm.hook.innersight_wrap_model.get_hookimpls()
    backends = sorted(
        {
            (info.name, _dist(info))
            for info in (pm.infos.get(i.plugin_name, PluginInfo(i.plugin_name, "?")) for i in impls)
        }
    )
    print(f"\nBackends ({len(backends)}):")
    print_table(backends, ("plugin", "distribution"))

    if pm.failures:
        print(f"\nPlugins that failed to load ({len(pm.failures)}):")
        print_table(
            [(f.plugin.name, _dist(f.plugin), f.stage, f.error) for f in pm.failures],
            ("plugin", "distribution", "stage", "error"),
        )
    return 0
