"""The one place a stage's command line is built; runners only decide where it runs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

ENTRY = "stylegan-ops"


@cache
def known_stages() -> frozenset[str]:
    """Every runnable sub-command path of the CLI, e.g. ``prepare lsun``, ``store snapshot``."""
    import click

    from stylegan_ops.cli import main

    stages: set[str] = set()

    def walk(group: click.Group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if isinstance(cmd, click.Group):
                walk(cmd, f"{prefix}{name} ")
            else:
                stages.add(f"{prefix}{name}")

    walk(main, "")
    return frozenset(stages)


def check_stage(stage: str) -> str:
    if stage not in known_stages():
        raise ValueError(f"unknown stage {stage!r}; known: {', '.join(sorted(known_stages()))}")
    return stage


def build_command(stage: str, arguments: Sequence[Any] = ()) -> list[str]:
    """``stylegan-ops <stage words> <arguments>`` as an argv list; an argument that is a
    list (a template rendered to one, e.g. optional flags) contributes its items."""
    argv = [ENTRY, *check_stage(stage).split()]
    for arg in arguments:
        if isinstance(arg, list | tuple):
            argv += [str(a) for a in arg]
        elif arg is not None:
            argv.append(str(arg))
    return argv


def last_json(lines: Iterable[str]) -> Any:
    """The stage's result: the last output line that is a JSON object."""
    for line in reversed(list(lines)):
        text = line.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError:
                continue
    return None
