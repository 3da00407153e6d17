"""The worker: the Python program that runs inside each session's sandbox.

It is started by the launcher (``python -I -m sandbox_exec._worker``) after every isolation
step, attaches to its end of the shared-memory rings (descriptors 5-8), reports ready and
then executes one cell per request. Nothing here runs in the backend process.
"""
