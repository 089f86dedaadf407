"""The installer: what deploy sets up (``plan``, ``naming``, ``policies``, ``functions``,
``monitoring``: pure), how it reconciles each resource (``bucket``, ``iam``, ``lambdas``,
``alerting``, orchestrated by ``deploy``), the CloudFormation ``template``, the Lambda
``package``, and ``status``, ``teardown`` and the ``smoke_test`` behind test-function.
"""
