"""`neurocyte`: run the local stack, submit recordings, follow them, read the mail."""

from __future__ import annotations

import atexit
import gc

import click

from neurocyte_cli.commands import experiment, offline, operate, stack, submit

# The interpreter's last garbage collection walks every object numba's compiler made, after
# `neurocyte detect` has finished its work. Freezing them at exit skips that walk;
# the commands close their own files, so no finaliser is owed anything.
atexit.register(gc.freeze)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Neurocyte: spike analysis of multi-electrode-array recordings, upload in, email out.

    Locally everything runs on LocalStack (no Docker needed): `neurocyte up`, then
    `neurocyte submit FILE... --email ADDRESS`, `neurocyte status`, `neurocyte inbox`.
    """


for command in (stack.up, stack.down, stack.demo, submit.validate, submit.submit, offline.detect, offline.report,
                experiment.experiment, operate.status, operate.inbox, operate.dlq):
    cli.add_command(command)
