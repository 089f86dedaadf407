"""``dynamo-backups demo``: see the whole backup path work, with nothing to set up."""

from __future__ import annotations

import click

from dynamo_backups.cli.common import EXIT_USAGE, Invocation, fail, pass_invocation
from dynamo_backups.cli.lines import say


@click.command()
@pass_invocation
def demo(invocation: Invocation) -> None:
    """Run a backup end to end on an in-process AWS emulator (moto).

    Creates a table with a stream and a versioned bucket, writes, updates and deletes a
    few items, runs the stream consumer (the Lambda handler's code), and shows what the
    checklist's "Validate Functionality" step looks for: the prefix and table folders, one
    object per item named by the MD5 of its key, and the versions and delete markers of a
    changed and a deleted item. Needs: pip install 'dynamo-backups[demo]'.
    """
    given = [
        option
        for option, value in (
            ("--endpoint-url", invocation.aws.endpoint_url),
            ("--region", invocation.aws.region),
            ("--profile", invocation.aws.profile),
        )
        if value
    ]
    if given:
        fail(
            f"{', '.join(given)}: the demo runs on an in-process emulator and uses no AWS "
            "account or endpoint; leave them out",
            EXIT_USAGE,
        )
    from dynamo_backups.cli.demo_scenario import run_demo

    def progress(message: str) -> None:
        if not invocation.json_output and not invocation.quiet:  # -q: warnings and errors only
            say(f"- {message}", "demo")

    try:
        result = run_demo(progress)
    except RuntimeError as error:
        fail(str(error))
    invocation.emit({"lines": result.lines, "problems": result.problems}, "\n".join(result.lines))
    if result.problems:
        fail("the demo found problems: " + "; ".join(result.problems))
