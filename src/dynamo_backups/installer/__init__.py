"""The installer: the checklist's console steps as one idempotent deploy, and the same
resources as a CloudFormation template."""
