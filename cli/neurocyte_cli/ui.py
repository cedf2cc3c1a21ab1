"""What every command shares: the consoles, failing with a message, modules loaded on first use."""

from __future__ import annotations

import sys

from rich.console import Console


class _Lazy:
    """A module imported on first use: `neurocyte detect` needs neither boto3 nor requests,
    and start-up time counts when a command is run on many small files."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        import importlib

        return getattr(importlib.import_module(self._name, __package__), attr)


L = _Lazy(".local")
_status = _Lazy("neurocyte_shared.storage.status")


def status_of(*args, **kwargs):
    return _status.status_of(*args, **kwargs)


def uploads(*args, **kwargs):
    return _status.uploads(*args, **kwargs)


# emoji=False: a file name such as `rat:cat:1.bin` is printed as it is, and rich's table of
# emoji codes is never loaded.
console = Console(stderr=True, emoji=False)
out = Console(emoji=False)


def _fail(message: str, code: int = 1) -> None:
    console.print(f"[red]error:[/red] {message}")
    sys.exit(code)


def _outputs(local) -> dict[str, str]:
    local.use()
    try:
        return L.stack_outputs(local)
    except Exception:  # noqa: BLE001
        _fail(f"no Neurocyte stack {local.stack!r} at {local.endpoint}: start it with `neurocyte up`")
        raise
