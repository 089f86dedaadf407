"""The Spark job: one dynamo-backups command, run in the Spark driver with ``--engine spark``,
for spark-submit, EMR Serverless and AWS Glue (docs/scale.md shows each).

    spark-submit --master yarn spark_job.py backfill Users --bucket my-backups --prefix Prod
    (EMR Serverless: entryPoint s3://.../spark_job.py, entryPointArguments the command)
    (AWS Glue: script s3://.../spark_job.py, job parameter
     --dynamo_backups_command "restore my-backups Prod/Users Users-restored")

``python -m dynamo_backups.cli.spark_job --path`` prints where this file is, to upload.
"""

from __future__ import annotations

import shlex
import sys

GLUE_PARAMETER = "--dynamo_backups_command"


def command_arguments(argv: list[str]) -> list[str]:
    """The command's arguments: as given, or from Glue's job parameter (Glue adds its own
    parameters, --JOB_ID, --JOB_RUN_ID, ..., around it); always on the Spark engine."""
    if GLUE_PARAMETER in argv:
        position = argv.index(GLUE_PARAMETER)
        if position + 1 >= len(argv):
            raise SystemExit(f"error: {GLUE_PARAMETER} needs the command as its value")
        argv = shlex.split(argv[position + 1])
    if "--engine" not in argv:
        argv = [*argv, "--engine", "spark"]
    return argv


def main(argv: list[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments == ["--path"]:
        print(__file__)
        return
    from dynamo_backups.cli import main as cli

    cli.main(args=command_arguments(arguments), prog_name="dynamo-backups")


if __name__ == "__main__":
    main()
