"""pytest-recording's vocabulary, for suites moving over from it: ``--record-mode`` (with
its ``rewrite`` mode), ``--block-network``, ``--allowed-hosts`` (comma-separated) and the
``block_network`` marker mean what they meant there.

When pytest-recording is loaded too (a gradual migration, a transitive dependency), it
keeps its own flags and markers, and depfakes answers to its ``--deps-*`` spellings only
(``--deps-record-mode``, ``--deps-block-network``, ``--deps-allow-hosts``): pytest starts
either way, and one plugin owns each flag.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points

import pytest

PLUGIN = "recording"  # pytest-recording's plugin name (its pytest11 entry point)
MODULE = "pytest_recording.plugin"
# Its flags, which depfakes takes as aliases of its own settings when it is absent.
FLAGS = ("--record-mode", "--block-network", "--allowed-hosts")
MARKER = "block_network"


def loaded(pluginmanager: pytest.PytestPluginManager) -> bool:
    """Whether pytest-recording is, or is about to be, loaded: entry points register one
    by one, so it may come after depfakes' options are added."""
    if pluginmanager.has_plugin(PLUGIN) or pluginmanager.has_plugin(MODULE):
        return True
    if pluginmanager.is_blocked(PLUGIN) or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(entry.name == PLUGIN for entry in entry_points(group="pytest11"))


def register_marker(config: pytest.Config) -> None:
    if not loaded(config.pluginmanager):
        config.addinivalue_line(
            "markers", f"{MARKER}(allowed_hosts=[...]): only loopback, Unix sockets and these "
            "hosts for this test (pytest-recording's marker, served by depfakes)")


def marked_hosts(item: pytest.Item) -> list[str] | None:
    """The hosts a ``block_network`` marker allows (None: no marker, or pytest-recording
    owns it)."""
    mark = item.get_closest_marker(MARKER)
    if mark is None or loaded(item.config.pluginmanager):
        return None
    hosts = mark.kwargs.get("allowed_hosts") or []
    return hosts.split(",") if isinstance(hosts, str) else list(hosts)
